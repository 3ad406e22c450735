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

Where the process backend has FUSE (``fusemounts.py``), an ``obsfs`` mount (a whole
bucket) is no copy but an rclone mount on the same folder: ``prepare`` mounts it (read-only
for ``ReadOnlyMany``), the loop leaves it alone, ``finish`` waits until rclone has
uploaded what the notebook wrote and unmounts it (when the store is away, the mount stays
and the loop unmounts it once the uploads are done), ``remove`` unmounts it before the
folders go, and ``warning`` reports a mount whose rclone ended while the notebook runs.
rclone runs in a session of its own: a restarted server finds it by the pid in the state.
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
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from demanager import errors
from demanager.backends import fusemounts
from demanager.backends.base import LaunchSpec
from demanager.backends.sandbox import Account
from demanager.domain.instance import FailedReason
from demanager.objectstore.access import ObjectAccess
from demanager.objectstore.mounts import BucketMount, bucket_mounts
from demanager.objectstore.options import S3Options
from demanager.objectstore.paths import BucketPath
from demanager.objectstore.stores import StoreCache
from demanager.objectstore.sync import FolderSync
from demanager.schemas.errors import lookup as error_code

if TYPE_CHECKING:
    from demanager.objectstore.client import ObjectStore

log = logging.getLogger(__name__)

OBJECTS_DIR = "objects"
"""In the data dir: the synced copies of the buckets, one folder per instance."""
SYNC_DIR = ".sync"
STATE_FILE = "state.json"
FIRST_RETRY_SECONDS = 1.0
MAX_RETRY_SECONDS = 60.0
ACCESS_CODE = "ModelArts.6320"
FLUSH_SECONDS = 60.0
"""How long a stop waits for rclone to upload what the notebook wrote; past it, the
stop goes on and the loop unmounts once the uploads are done."""


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
    stopped: bool = False
    """The workload ended: the FUSE mounts go once their uploads are done."""
    rclone: dict[str, int] = field(default_factory=dict)
    """The pid of the rclone serving each FUSE mount (by mount name), while mounted."""

    def bucket_mounts(self, *, fuse: bool | None = None) -> list[BucketMount]:
        """Every mount; with ``fuse``, only the FUSE mounts (True) or the copies (False)."""
        return [
            BucketMount(
                name=str(m["name"]),
                where=BucketPath(str(m["bucket"]), str(m["prefix"])),
                mount_path=str(m["mount_path"]),
                read_only=bool(m["read_only"]),
            )
            for m in self.mounts
            if fuse is None or bool(m.get("fuse")) == fuse
        ]


def _describe(mount: BucketMount, *, fuse: bool) -> dict[str, object]:
    return {
        "name": mount.name,
        "bucket": mount.where.bucket,
        "prefix": mount.where.prefix,
        "mount_path": mount.mount_path,
        "read_only": mount.read_only,
        "fuse": fuse,
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
        self._rclone: fusemounts.Rclone | None = None

    @property
    def deployment(self) -> S3Options:
        return self._access.deployment

    def use_fuse(self, rclone: str | None) -> None:
        """Mount ``obsfs`` buckets with this rclone from now on (None: synced copies).
        Only a backend whose workloads run on this host as their own uid asks for it."""
        self._rclone = fusemounts.Rclone(rclone) if rclone else None

    def _fused(self, mount: BucketMount, owner: Account | None) -> bool:
        return self._rclone is not None and owner is not None and mount.whole_bucket

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
            options = [
                await self._access.options_for(spec.project_id, m.where.bucket) for m in mounts
            ]
        except (errors.ObjectStorageAccessError, errors.ObjectStorageCredentialsMissing) as exc:
            raise _start_failure(exc) from exc
        # A mounted work dir could hold no links to the other mounts (they all lie in
        # it): it is then a copy.
        fused = {
            m.name for m in mounts
            if self._fused(m, owner) and not (m.is_work_dir and len(mounts) > 1)
        }
        copies = [(m, self._store(o)) for m, o in zip(mounts, options, strict=True)
                  if m.name not in fused]
        async with self._lock(instance_id):
            await asyncio.to_thread(self._make_dirs, instance_id, owner)
            state = self._load(instance_id) or _State(spec.project_id, [])
            # Mounts that a stop left up (uploads pending) or a crash left behind: the
            # next rclone uploads what this one had not, from the same cache.
            await asyncio.to_thread(self._unmount_all, instance_id, state)
            state.project_id = spec.project_id
            state.mounts = [_describe(m, fuse=m.name in fused) for m in mounts]
            state.active, state.remove, state.stopped = True, False, False
            # A new run: the last one's outage report is not this one's news.
            state.recovered = None
            self._save(instance_id, state)
            try:
                await asyncio.to_thread(
                    self._down, instance_id, [m for m, _ in copies], [s for _, s in copies], owner
                )
                for mount, option in zip(mounts, options, strict=True):
                    if mount.name in fused:
                        assert owner is not None
                        state.rclone[mount.name] = await asyncio.to_thread(
                            self._mount, instance_id, mount, option, owner
                        )
                        self._save(instance_id, state)
            except errors.ObjectStorageAccessError as exc:
                await asyncio.to_thread(self._unmount_all, instance_id, state)
                raise _start_failure(exc) from exc
            except fusemounts.MountFailed as exc:
                await asyncio.to_thread(self._unmount_all, instance_id, state)
                raise errors.PermanentBackendError(str(exc), ACCESS_CODE) from exc
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

    def _mount(
        self, instance_id: str, mount: BucketMount, options: S3Options, owner: Account
    ) -> int:
        """Mount the whole bucket on its folder; the pid of its rclone."""
        store = self._store(options)
        # rclone mounts a bucket it cannot read and fails each access later: checking
        # first fails the start with the contract's reason instead.
        store.check(mount.where.bucket, "")
        folder = self.instance_dir(instance_id) / mount.name
        with self._host_lock(instance_id):
            self._retire_copy(instance_id, mount, store)
            folder.mkdir(mode=0o700, exist_ok=True)
            folder.chmod(0o700)  # unmounted, closed to the instance
            request = fusemounts.MountRequest(
                bucket=mount.where.bucket,
                folder=folder,
                state_dir=self._sync_dir(instance_id),
                read_only=mount.read_only,
                owner=owner,
                options=options,
            )
            assert self._rclone is not None
            try:
                pid = self._rclone.mount(request)
            except fusemounts.MountFailed as exc:
                raise fusemounts.MountFailed(
                    f"OBS access error: the bucket '{mount.where.bucket}' cannot be mounted: {exc}"
                ) from None
        log.info(
            "%s: %s mounted from %s by rclone %d%s",
            instance_id, mount.name, mount.where.bucket, pid,
            " (read-only)" if mount.read_only else "",
        )
        return pid

    def _retire_copy(self, instance_id: str, mount: BucketMount, store: ObjectStore) -> None:
        """A synced copy of the bucket made before FUSE was in use: its changes go up,
        then it goes, for the mount to take its place."""
        folder = self.instance_dir(instance_id) / mount.name
        manifest = self._sync_dir(instance_id) / f"{mount.name}.json"
        if not manifest.exists() or fusemounts.mounted_under(folder):
            return
        if not mount.read_only:
            self._folder_sync(instance_id, mount, store).up_blocking()
        shutil.rmtree(folder, ignore_errors=True)
        manifest.unlink()

    def _unmount_all(self, instance_id: str, state: _State) -> None:
        """Unmount every FUSE mount of the instance, uploaded or not (what is not stays in
        rclone's cache)."""
        folders = {name: self.instance_dir(instance_id) / name for name in state.rclone}
        for name, pid in sorted(state.rclone.items()):
            fusemounts.unmount(folders[name], pid)
        for stale in fusemounts.mounted_under(self.instance_dir(instance_id)):
            fusemounts.unmount(stale, None)
        if state.rclone:
            state.rclone = {}
            self._save(instance_id, state)

    def _release(self, instance_id: str, state: _State) -> None:
        """Unmount the FUSE mounts that hold nothing rclone has still to upload. Raises
        ``ObjectStorageAccessError`` naming what is pending (the mounts stay)."""
        waiting = []
        for mount in state.bucket_mounts(fuse=True):
            pid = state.rclone.get(mount.name)
            if pid is None:
                continue
            folder = self.instance_dir(instance_id) / mount.name
            cache = self._cache_dir(instance_id, mount)
            left = [] if mount.read_only else fusemounts.pending(cache)
            if left and fusemounts.running(folder, pid):
                waiting.append(f"{len(left)} files for the bucket '{mount.where.bucket}'")
                continue
            if left:
                log.error(
                    "%s: the rclone of %s ended with %d files not uploaded; they are "
                    "uploaded at the next start", instance_id, mount.name, len(left),
                )
            fusemounts.unmount(folder, pid)
            del state.rclone[mount.name]
            self._save(instance_id, state)
        if waiting:
            raise errors.ObjectStorageAccessError(
                f"rclone has not uploaded {', '.join(waiting)} yet."
            )

    def _pending(self, instance_id: str, state: _State) -> bool:
        """Whether a running rclone of the instance has files still to upload."""
        return any(
            fusemounts.pending(self._cache_dir(instance_id, m))
            and fusemounts.running(self.instance_dir(instance_id) / m.name, state.rclone[m.name])
            for m in state.bucket_mounts(fuse=True)
            if not m.read_only and m.name in state.rclone
        )

    def _cache_dir(self, instance_id: str, mount: BucketMount) -> Path:
        return fusemounts.MountRequest.cache_dir_of(self._sync_dir(instance_id), mount.name)

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
                mounts = [m for m in state.bucket_mounts(fuse=False) if not m.read_only]
                stores = [
                    self._store(await self._access.options_for(state.project_id, m.where.bucket))
                    for m in mounts
                ]
                await asyncio.to_thread(self._up, instance_id, mounts, stores)
                if state.stopped and state.rclone:
                    await asyncio.to_thread(self._release, instance_id, state)
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
        """At stop, once the workload is gone: the last sync, and the FUSE mounts go once
        rclone has uploaded what was written (``FLUSH_SECONDS`` at most). On failure the
        folder stays active and the loop retries; the stop goes on."""
        if not await self._mark_stopped(instance_id):
            return
        deadline = time.monotonic() + FLUSH_SECONDS
        while time.monotonic() < deadline:
            state = self._load(instance_id)
            if state is None or not await asyncio.to_thread(self._pending, instance_id, state):
                break
            await asyncio.sleep(0.2)
        if await self.sync_up(instance_id):
            async with self._lock(instance_id):
                state = self._load(instance_id)
                if state is not None:
                    state.active = False
                    self._save(instance_id, state)

    async def _mark_stopped(self, instance_id: str) -> bool:
        async with self._lock(instance_id):
            state = self._load(instance_id)
            if state is None:
                return False
            state.stopped = True
            self._save(instance_id, state)
            return True

    async def remove(self, instance_id: str) -> None:
        """At delete: sync up, then remove the folders; kept until a sync succeeds."""
        state = self._load(instance_id)
        if state is None:
            await asyncio.to_thread(self._remove_folders, instance_id)
            return
        state.remove, state.active, state.stopped = True, True, True
        self._save(instance_id, state)
        if await self.sync_up(instance_id):
            await self._drop(instance_id)
        else:
            self._ensure_running()

    async def _drop(self, instance_id: str) -> None:
        async with self._lock(instance_id):
            await asyncio.to_thread(self._remove_folders, instance_id)
        self._locks.pop(instance_id, None)
        self._next_try.pop(instance_id, None)
        self._delay.pop(instance_id, None)

    def _remove_folders(self, instance_id: str) -> None:
        """Remove the instance's folders, never a bucket: whatever is still mounted there
        is unmounted first, and nothing is removed while a mount stays."""
        top = self.instance_dir(instance_id)
        state = self._load(instance_id)
        if state is not None:
            self._unmount_all(instance_id, state)
        else:
            for stale in fusemounts.mounted_under(top):
                fusemounts.unmount(stale, None)
        left = fusemounts.mounted_under(top)
        if left:
            log.error("%s: %s is still mounted; its folders are kept", instance_id, left[0])
            return
        shutil.rmtree(top, ignore_errors=True)

    def warning(self, instance_id: str) -> FailedReason | None:
        """What the notebook's user should know about its buckets: a mount whose rclone
        ended, a sync outage going on, or the last one it came through."""
        state = self._load(instance_id)
        if state is None:
            return None
        gone = None if state.stopped else self._ended_mount(instance_id, state)
        if gone is not None:
            return gone
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

    def _ended_mount(self, instance_id: str, state: _State) -> FailedReason | None:
        for mount in state.bucket_mounts(fuse=True):
            pid = state.rclone.get(mount.name)
            folder = self.instance_dir(instance_id) / mount.name
            if pid is None or fusemounts.running(folder, pid):
                continue
            said = fusemounts.last_words(self._sync_dir(instance_id), mount.name)
            return FailedReason(
                ACCESS_CODE,
                f"The mount of the bucket '{mount.where.bucket}' at {mount.mount_path} ended"
                f"{f' ({said})' if said else ''}. Restart the notebook to mount it again; "
                "what was written there and not uploaded yet is uploaded then.",
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
            if not await self.sync_up(entry):
                continue
            if state.remove:
                await self._drop(entry)
            elif state.stopped:
                await self._settled(entry)

    async def _settled(self, instance_id: str) -> None:
        """A stopped instance whose last sync (and uploads) went through: inactive."""
        async with self._lock(instance_id):
            state = self._load(instance_id)
            if state is not None and state.stopped and not state.rclone:
                state.active = False
                self._save(instance_id, state)


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
