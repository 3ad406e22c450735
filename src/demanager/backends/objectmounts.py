"""Synced copies of an instance's buckets on the server's host, for the backends whose
workloads see host folders (process: the folder itself or a link to it; Docker: a bind
mount).

For each instance, ``{data_dir}/objects/{id}/`` holds one folder per bucket mount
(``objectstore/mounts.py``) and, in ``.sync/`` (root-only), the sync manifests and the
instance's sync state. The server moves the data; no key ever reaches the notebook.

* ``prepare`` (at start, before the workload runs): every mount is synced down, then
  owned for the workload: read-write mounts by its uid, read-only ones by root, so that
  the instance's uid cannot write them;
* the background loop (``run``): read-write mounts of active instances are synced up
  every ``interval`` seconds; a failure is retried with a backoff, and ``warning`` tells
  the engine, which shows it in ``failed_reasons`` while the notebook runs;
* ``finish`` (at stop, after the workload ended) syncs up once more. When the store is
  away the instance still stops: the folder stays active and the loop syncs it as soon
  as the store answers, so nothing written before the stop is lost;
* ``remove`` (at delete) syncs up, then removes the folders; when the store is away
  the folders stay until a sync succeeds.

The state is on disk, so a restarted server goes on where the last one stopped: the
loop resumes for adopted workloads, and a stop after a crash syncs what was written.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from demanager import errors
from demanager.backends.base import LaunchSpec
from demanager.backends.sandbox import Account
from demanager.domain.instance import FailedReason
from demanager.objectstore.access import ObjectAccess
from demanager.objectstore.client import ObjectStore, StoreCache
from demanager.objectstore.mounts import BucketMount, bucket_mounts
from demanager.objectstore.options import S3Options
from demanager.objectstore.paths import BucketPath
from demanager.objectstore.sync import FolderSync
from demanager.schemas.errors import lookup as error_code

log = logging.getLogger(__name__)

OBJECTS_DIR = "objects"
"""In the data dir: the synced copies of the buckets, one folder per instance."""
SYNC_DIR = ".sync"
STATE_FILE = "state.json"
FIRST_RETRY_SECONDS = 1.0
MAX_RETRY_SECONDS = 60.0
ACCESS_CODE = "ModelArts.6320"


@dataclass(frozen=True)
class Prepared:
    """A bucket mount and the host folder that holds its synced copy."""

    mount: BucketMount
    folder: Path


@dataclass
class _State:
    """An instance's sync state, kept in ``.sync/state.json``."""

    project_id: str
    mounts: list[dict[str, object]]
    active: bool = True
    """Its read-write mounts may hold changes the bucket lacks: the loop syncs them."""
    remove: bool = False
    """Deleted: remove the folders after the next sync that succeeds."""
    failing_since: float | None = None
    reason: str | None = None
    recovered: tuple[float, float] | None = None
    """The last outage the sync came through, for the warning that says so."""

    def bucket_mounts(self) -> list[BucketMount]:
        return [
            BucketMount(
                name=str(m["name"]),
                where=BucketPath(str(m["bucket"]), str(m["prefix"])),
                mount_path=str(m["mount_path"]),
                read_only=bool(m["read_only"]),
            )
            for m in self.mounts
        ]


def _describe(mount: BucketMount) -> dict[str, object]:
    return {
        "name": mount.name,
        "bucket": mount.where.bucket,
        "prefix": mount.where.prefix,
        "mount_path": mount.mount_path,
        "read_only": mount.read_only,
    }


def _clock_text(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class HostMounts:
    def __init__(self, root: Path, access: ObjectAccess, *, interval: float = 30.0) -> None:
        self._root = root
        self._access = access
        self._interval = interval
        self._locks: dict[str, asyncio.Lock] = {}
        self._next_try: dict[str, float] = {}
        self._delay: dict[str, float] = {}
        self._stores = StoreCache()
        self._task: asyncio.Task[None] | None = None

    # --- paths and state --------------------------------------------------------------

    def instance_dir(self, instance_id: str) -> Path:
        return self._root / instance_id

    def _sync_dir(self, instance_id: str) -> Path:
        return self.instance_dir(instance_id) / SYNC_DIR

    def _load(self, instance_id: str) -> _State | None:
        try:
            raw = json.loads((self._sync_dir(instance_id) / STATE_FILE).read_text("utf-8"))
            recovered = raw.pop("recovered", None)
            return _State(**raw, recovered=tuple(recovered) if recovered else None)
        except (OSError, ValueError, TypeError):
            return None

    def _save(self, instance_id: str, state: _State) -> None:
        path = self._sync_dir(instance_id) / STATE_FILE
        partial = path.with_name(STATE_FILE + ".tmp")
        partial.write_text(json.dumps(asdict(state)), encoding="utf-8")
        partial.replace(path)

    def _lock(self, instance_id: str) -> asyncio.Lock:
        return self._locks.setdefault(instance_id, asyncio.Lock())

    @contextlib.contextmanager
    def _host_lock(self, instance_id: str) -> Iterator[None]:
        """Held while one instance's folders sync: two servers on one host (replicas)
        never sync the same folder at once."""
        fd = os.open(self._sync_dir(instance_id) / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _store(self, options: S3Options) -> ObjectStore:
        return self._stores.get(options)

    def _folder_sync(self, instance_id: str, mount: BucketMount, store: ObjectStore) -> FolderSync:
        return FolderSync(
            store,
            mount.where,
            self.instance_dir(instance_id) / mount.name,
            self._sync_dir(instance_id) / f"{mount.name}.json",
        )

    # --- start ------------------------------------------------------------------------

    async def prepare(self, spec: LaunchSpec, owner: Account | None) -> list[Prepared]:
        """Sync every bucket of the instance down and own it for the workload. Raises
        ``PermanentBackendError`` (6319/6320, naming the bucket) when a bucket cannot be
        read: the start fails with it in ``failed_reasons``."""
        mounts = bucket_mounts(spec.storage, spec.extend_storage)
        if not mounts:
            return []
        instance_id = spec.instance_id
        try:
            stores = [
                self._store(await self._access.options_for(spec.project_id, m.where.bucket))
                for m in mounts
            ]
        except (errors.ObjectStorageAccessError, errors.ObjectStorageCredentialsMissing) as exc:
            raise _start_failure(exc) from exc
        async with self._lock(instance_id):
            await asyncio.to_thread(self._make_dirs, instance_id, owner)
            state = self._load(instance_id) or _State(spec.project_id, [])
            state.project_id, state.mounts = spec.project_id, [_describe(m) for m in mounts]
            state.active, state.remove = True, False
            # A new run: the last one's outage report is not this one's news.
            state.recovered = None
            self._save(instance_id, state)
            try:
                await asyncio.to_thread(self._down, instance_id, mounts, stores, owner)
            except errors.ObjectStorageAccessError as exc:
                raise _start_failure(exc) from exc
        self._ensure_running()
        return [Prepared(m, self.instance_dir(instance_id) / m.name) for m in mounts]

    def _make_dirs(self, instance_id: str, owner: Account | None) -> None:
        top = self.instance_dir(instance_id)
        self._root.mkdir(parents=True, exist_ok=True)
        # Traversable by the instances' uids (whatever the umask), not listable.
        self._root.chmod(0o711 if owner is not None else 0o700)
        top.mkdir(exist_ok=True)
        # As root: traversable by the instance's group only, so that no other instance's
        # uid reaches these folders even knowing their names.
        if owner is not None:
            os.chown(top, 0, owner.gid)
            top.chmod(0o710)
        else:
            top.chmod(0o700)
        sync = self._sync_dir(instance_id)
        sync.mkdir(exist_ok=True)
        sync.chmod(0o700)

    def _down(
        self,
        instance_id: str,
        mounts: list[BucketMount],
        stores: list[ObjectStore],
        owner: Account | None,
    ) -> None:
        with self._host_lock(instance_id):
            for mount, store in zip(mounts, stores, strict=True):
                folder = self.instance_dir(instance_id) / mount.name
                folder.mkdir(exist_ok=True)
                _writable_by_server(folder)
                report = self._folder_sync(instance_id, mount, store).down_blocking()
                _own(folder, owner, read_only=mount.read_only)
                log.info(
                    "%s: %s synced down from %s (%d files, %d copies kept)",
                    instance_id, mount.name, mount.where.bucket,
                    len(report.downloaded), len(report.kept_copies),
                )

    # --- while running and after ------------------------------------------------------

    async def sync_up(self, instance_id: str) -> bool:
        """Sync the instance's read-write mounts up once; False when the store failed
        (the state then says since when, and ``warning`` reports it)."""
        async with self._lock(instance_id):
            state = self._load(instance_id)
            if state is None:
                return True
            now = time.time()
            try:
                mounts = [m for m in state.bucket_mounts() if not m.read_only]
                stores = [
                    self._store(await self._access.options_for(state.project_id, m.where.bucket))
                    for m in mounts
                ]
                await asyncio.to_thread(self._up, instance_id, mounts, stores)
            except (errors.ObjectStorageAccessError, errors.ObjectStorageCredentialsMissing) as exc:
                if state.failing_since is None:
                    log.warning(
                        "%s: the object storage sync failed (%s); retrying with a backoff, "
                        "nothing is deleted here meanwhile", instance_id, exc.message,
                    )
                    state.failing_since = now
                state.reason = exc.message
                self._save(instance_id, state)
                delay = min(self._delay.get(instance_id, FIRST_RETRY_SECONDS / 2) * 2,
                            MAX_RETRY_SECONDS)
                self._delay[instance_id] = delay
                self._next_try[instance_id] = time.monotonic() + delay
                return False
            if state.failing_since is not None:
                log.warning(
                    "%s: the object storage answers again; the changes made since %s are "
                    "synced", instance_id, _clock_text(state.failing_since),
                )
                state.recovered = (state.failing_since, now)
                state.failing_since, state.reason = None, None
                self._save(instance_id, state)
            self._delay.pop(instance_id, None)
            self._next_try[instance_id] = time.monotonic() + self._interval
            return True

    def _up(self, instance_id: str, mounts: list[BucketMount], stores: list[ObjectStore]) -> None:
        with self._host_lock(instance_id):
            for mount, store in zip(mounts, stores, strict=True):
                report = self._folder_sync(instance_id, mount, store).up_blocking()
                if report.uploaded or report.deleted_remote:
                    log.info(
                        "%s: %s synced up to %s (%d files up, %d deleted, %d copies kept)",
                        instance_id, mount.name, mount.where.bucket, len(report.uploaded),
                        len(report.deleted_remote), len(report.kept_copies),
                    )

    async def finish(self, instance_id: str) -> None:
        """At stop, once the workload is gone: the last sync. On failure the folder stays
        active and the loop retries; the stop goes on."""
        if self._load(instance_id) is None:
            return
        if await self.sync_up(instance_id):
            async with self._lock(instance_id):
                state = self._load(instance_id)
                if state is not None:
                    state.active = False
                    self._save(instance_id, state)

    async def remove(self, instance_id: str) -> None:
        """At delete: sync up, then remove the folders; kept until a sync succeeds."""
        state = self._load(instance_id)
        if state is None:
            await asyncio.to_thread(shutil.rmtree, self.instance_dir(instance_id), True)
            return
        state.remove, state.active = True, True
        self._save(instance_id, state)
        if await self.sync_up(instance_id):
            await self._drop(instance_id)
        else:
            self._ensure_running()

    async def _drop(self, instance_id: str) -> None:
        async with self._lock(instance_id):
            await asyncio.to_thread(shutil.rmtree, self.instance_dir(instance_id), True)
        self._locks.pop(instance_id, None)
        self._next_try.pop(instance_id, None)
        self._delay.pop(instance_id, None)

    def warning(self, instance_id: str) -> FailedReason | None:
        """What the notebook's user should know about the sync: an outage going on, or
        the last one it came through."""
        state = self._load(instance_id)
        if state is None:
            return None
        if state.failing_since is not None:
            return FailedReason(
                ACCESS_CODE,
                f"Object storage sync failing since {_clock_text(state.failing_since)}: "
                f"{state.reason} The notebook keeps running; the sync retries with a "
                "backoff and nothing is lost.",
            )
        if state.recovered is not None:
            began, ended = state.recovered
            return FailedReason(
                ACCESS_CODE,
                f"Object storage was unreachable from {_clock_text(began)} to "
                f"{_clock_text(ended)}; the changes made meanwhile are synced.",
            )
        return None

    # --- the loop ---------------------------------------------------------------------

    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self.run())

    def start(self) -> None:
        self._ensure_running()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def run(self) -> None:
        tick = min(1.0, self._interval)
        while True:
            try:
                await self.sync_due()
            except Exception:  # the loop must outlive any one instance's fault
                log.exception("the object storage sync loop failed; going on")
            await asyncio.sleep(tick)

    async def sync_due(self) -> None:
        """Sync every active instance whose turn has come."""
        if not self._root.is_dir():
            return
        now = time.monotonic()
        for entry in sorted(await asyncio.to_thread(os.listdir, self._root)):
            state = self._load(entry)
            if state is None or not state.active:
                continue
            if now < self._next_try.setdefault(entry, now + self._interval):
                continue
            if await self.sync_up(entry) and state.remove:
                await self._drop(entry)


def _start_failure(exc: errors.DemanagerError) -> errors.PermanentBackendError:
    """A bucket that cannot be read fails the start, with the contract's code."""
    return errors.PermanentBackendError(exc.message, error_code(exc)[1])


def _walk(folder: Path) -> Iterator[tuple[str, bool]]:
    """Every entry under ``folder`` (links not followed), as (path, is a directory)."""
    for parent, dirs, files in os.walk(folder):
        for name in dirs:
            yield os.path.join(parent, name), True
        for name in files:
            yield os.path.join(parent, name), False


def _writable_by_server(folder: Path) -> None:
    """Without root, a read-only mount's folders are 0555: open them for the sync."""
    if os.geteuid() == 0:
        return
    folder.chmod(0o700)
    for path, is_dir in _walk(folder):
        if is_dir and not os.path.islink(path):
            os.chmod(path, 0o700)


def _own(folder: Path, owner: Account | None, *, read_only: bool) -> None:
    """Read-write: the workload's uid owns everything (modes are the user's own).
    Read-only: root owns it, readable by all, writable by none (as root); without root,
    every write bit is off, which the same uid could put back (docs/security.md)."""
    if not read_only:
        folder.chmod(0o700)
        if owner is not None and os.geteuid() != 0:
            # A container's uid that is not the server's, which cannot give it files:
            # the folder is opened to it instead (its parent stays the server's, 0700).
            for path, is_dir in [(str(folder), True), *_walk(folder)]:
                if not os.path.islink(path):
                    with contextlib.suppress(FileNotFoundError):
                        os.chmod(path, 0o777 if is_dir else 0o666)
        elif owner is not None:
            for path in [str(folder), *(p for p, _ in _walk(folder))]:
                with contextlib.suppress(FileNotFoundError):
                    os.lchown(path, owner.uid, owner.gid)
        return
    as_root = owner is not None and os.geteuid() == 0
    for path, is_dir in [(str(folder), True), *_walk(folder)]:
        if os.path.islink(path):
            continue
        with contextlib.suppress(FileNotFoundError):
            if as_root:
                os.lchown(path, 0, 0)
            if is_dir:
                os.chmod(path, 0o755 if as_root else 0o555)
            else:
                os.chmod(path, 0o644 if as_root else 0o444)
