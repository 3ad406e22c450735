"""Sync a bucket directory with a local folder, both ways, keeping a manifest.

The manifest (JSON, kept by the caller outside the folder so a notebook cannot edit
it) records what the last sync left equal on both sides; ``plan.py`` decides from it.
A lost or unreadable manifest is safe: every file then looks new, so nothing is
deleted anywhere and same-named files are kept on both sides.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from demanager.objectstore.paths import BucketPath
from demanager.objectstore.plan import (
    Action,
    DeleteLocal,
    DeleteRemote,
    Download,
    Forget,
    KeepLocalCopy,
    KeepRemoteCopy,
    LocalEntry,
    RemoteEntry,
    SyncedEntry,
    Upload,
    plan_down,
    plan_up,
)

if TYPE_CHECKING:
    from demanager.objectstore.client import ObjectStore

log = logging.getLogger(__name__)

TRANSFER_THREADS = 10
"""Files moved at once. A small file's time is round trips, not bandwidth, so one at a
time was twice as slow as ``aws s3 sync``, which moves ten; ten is also the connection
pool boto3 gives a client."""


@dataclass
class SyncReport:
    """What one sync moved, by relative path."""

    downloaded: list[str] = field(default_factory=list)
    uploaded: list[str] = field(default_factory=list)
    deleted_local: list[str] = field(default_factory=list)
    deleted_remote: list[str] = field(default_factory=list)
    kept_copies: list[str] = field(default_factory=list)


def scan(folder: Path) -> dict[str, LocalEntry]:
    """The regular files under ``folder`` by relative POSIX path; links are not followed
    (a link could point anywhere on the host) and partial downloads are skipped."""
    found: dict[str, LocalEntry] = {}
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            if name.startswith(".") and name.endswith(".partial"):
                continue
            path = Path(dirpath, name)
            st = path.lstat()
            if not path.is_symlink() and path.is_file():
                rel = path.relative_to(folder).as_posix()
                found[rel] = LocalEntry(size=st.st_size, mtime_ns=st.st_mtime_ns)
    return found


def open_inside(folder: Path, path: Path) -> BinaryIO | None:
    """Open ``path`` for reading only if it is still a regular file inside ``folder``.

    The folder belongs to a notebook that runs while the sync reads it, and may swap a
    file, or a folder on its way, for a link after the scan: the server must never read
    (and upload) a file of the host through it. The file is opened first, without
    following a final link and without blocking on a FIFO; then the path the kernel
    opened is checked against the folder."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        real = Path(os.readlink(f"/proc/self/fd/{fd}"))
        if not stat.S_ISREG(st.st_mode) or not real.is_relative_to(folder.resolve()):
            os.close(fd)
            return None
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except OSError:
        os.close(fd)
        return None


def load_manifest(path: Path) -> dict[str, SyncedEntry]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return {k: SyncedEntry(**v) for k, v in raw.items()}
    except FileNotFoundError:
        return {}
    except (ValueError, TypeError):
        log.warning("the sync manifest %s is unreadable; every file counts as new", path)
        return {}


def save_manifest(path: Path, manifest: dict[str, SyncedEntry]) -> None:
    # Written aside then renamed, so a crash mid-write leaves the previous manifest.
    partial = path.with_name(path.name + ".tmp")
    data = {k: asdict(v) for k, v in sorted(manifest.items())}
    partial.write_text(json.dumps(data), encoding="utf-8")
    partial.replace(path)


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


@dataclass
class _Transfer:
    path: str
    future: Future[SyncedEntry | None]
    """None: the file was skipped, not moved."""
    done: list[str]
    """The report's list the path joins once the transfer succeeded."""


class _InFlight:
    """The transfers under way, in the plan's order, and the paths they hold.

    Actions on paths apart from each other commute, so only an action on the same
    path, on one of its folders, or under it waits for the transfers before it: a
    download of ``a/b`` must not make the folder ``a`` while ``a`` is still coming
    down as a file, and ``a`` must not be renamed or deleted while it moves."""

    def __init__(self) -> None:
        self.transfers: list[_Transfer] = []
        self._files: set[str] = set()
        self._folders: set[str] = set()

    def add(self, transfer: _Transfer) -> None:
        self.transfers.append(transfer)
        self._files.add(transfer.path)
        parts = transfer.path.split("/")
        self._folders.update("/".join(parts[:i]) for i in range(1, len(parts)))

    def holds(self, *paths: str) -> bool:
        for path in paths:
            if path in self._files or path in self._folders:
                return True
            parts = path.split("/")
            if any("/".join(parts[:i]) in self._files for i in range(1, len(parts))):
                return True
        return False

    def wait(self, manifest: dict[str, SyncedEntry]) -> None:
        """Wait for every transfer and record those that succeeded, in the plan's order;
        raise the first failure, after which transfers not yet started are dropped."""
        if (failure := self._settle(manifest, drop=False)) is not None:
            raise failure

    def abandon(self, manifest: dict[str, SyncedEntry]) -> None:
        """Drop the transfers not yet started, and record those that finish."""
        self._settle(manifest, drop=True)

    def _settle(self, manifest: dict[str, SyncedEntry], drop: bool) -> BaseException | None:
        failure: BaseException | None = None
        for transfer in self.transfers:
            if drop or failure is not None:
                transfer.future.cancel()  # refused, harmlessly, once it has started
            if transfer.future.cancelled():
                continue
            error = transfer.future.exception()
            if error is not None:
                failure = failure or error
                continue
            if (entry := transfer.future.result()) is not None:
                manifest[transfer.path] = entry
                transfer.done.append(transfer.path)
        self.transfers.clear()
        self._files.clear()
        self._folders.clear()
        return failure


class FolderSync:
    """One bucket directory and one folder; ``down`` at start, ``up`` periodically and at stop."""

    def __init__(self, store: ObjectStore, where: BucketPath, folder: Path, manifest: Path):
        self._store = store
        self._where = where
        self._folder = folder
        self._manifest_path = manifest

    def _key(self, rel: str) -> str:
        return self._where.prefix + rel

    def _local(self, rel: str) -> Path:
        return self._folder.joinpath(*rel.split("/"))

    def _placeable(self, target: Path) -> bool:
        """Make the file's folder; False when that cannot be done safely: a link on the
        way leads out of the folder (a notebook may plant one to a host folder, and the
        server must not write through it), or a file or folder already holds the name
        (a bucket may hold both ``a`` and ``a/b``)."""
        # Checked before anything is made, so that no folder is made through a link.
        parent = target.parent.resolve()
        if not parent.is_relative_to(self._folder.resolve()):
            return False
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            return False
        return not target.is_dir()

    def down_blocking(self, stamp: str | None = None) -> SyncReport:
        manifest = load_manifest(self._manifest_path)
        remote = self._store.list(self._where.bucket, self._where.prefix)
        actions = plan_down(remote, scan(self._folder), manifest, stamp or _stamp())
        return self._apply(actions, manifest, remote)

    def up_blocking(self, stamp: str | None = None) -> SyncReport:
        manifest = load_manifest(self._manifest_path)
        remote = self._store.list(self._where.bucket, self._where.prefix)
        actions = plan_up(remote, scan(self._folder), manifest, stamp or _stamp())
        return self._apply(actions, manifest, remote)

    async def down(self) -> SyncReport:
        return await asyncio.to_thread(self.down_blocking)

    async def up(self) -> SyncReport:
        return await asyncio.to_thread(self.up_blocking)

    def _download(self, rel: str, target: Path, size: int | None) -> SyncedEntry:
        etag = self._store.download(self._where.bucket, self._key(rel), target, size)
        st = target.stat()
        return SyncedEntry(etag, st.st_size, st.st_mtime_ns)

    def _upload(self, rel: str) -> SyncedEntry | None:
        """The uploaded file's entry; None when it is no longer a file of the folder."""
        opened = open_inside(self._folder, self._local(rel))
        if opened is None:
            log.warning("not syncing %s: it is no longer a file of the folder", rel)
            return None
        with opened as body:
            # Stat before the upload: a write during it is a change next time.
            st = os.fstat(body.fileno())
            etag = self._store.upload(self._where.bucket, self._key(rel), body, st.st_size)
        return SyncedEntry(etag, st.st_size, st.st_mtime_ns)

    def _apply(
        self,
        actions: list[Action],
        manifest: dict[str, SyncedEntry],
        remote: Mapping[str, RemoteEntry],
    ) -> SyncReport:
        report = SyncReport()
        bucket = self._where.bucket
        inflight = _InFlight()
        moved: Future[SyncedEntry | None]
        pool = ThreadPoolExecutor(TRANSFER_THREADS, thread_name_prefix="objectstore-sync")
        try:
            for action in actions:
                rel = action.path
                copy = action.copy if isinstance(action, KeepLocalCopy | KeepRemoteCopy) else rel
                if inflight.holds(rel, copy):
                    inflight.wait(manifest)
                if isinstance(action, Download):
                    # Placed here, one at a time: the check against links and the
                    # folders it makes see every earlier download's folders.
                    target = self._local(rel)
                    if not self._placeable(target):
                        log.warning("not syncing %s: it cannot be a file in the folder", rel)
                        continue
                    entry = remote.get(rel)
                    size = entry.size if entry is not None else None
                    moved = pool.submit(self._download, rel, target, size)
                    inflight.add(_Transfer(rel, moved, report.downloaded))
                elif isinstance(action, Upload):
                    moved = pool.submit(self._upload, rel)
                    inflight.add(_Transfer(rel, moved, report.uploaded))
                elif isinstance(action, KeepLocalCopy):
                    self._local(rel).replace(self._local(action.copy))
                    report.kept_copies.append(action.copy)
                elif isinstance(action, KeepRemoteCopy):
                    self._store.copy(bucket, self._key(rel), self._key(action.copy))
                    report.kept_copies.append(action.copy)
                elif isinstance(action, DeleteLocal):
                    self._local(rel).unlink(missing_ok=True)
                    manifest.pop(rel, None)
                    report.deleted_local.append(rel)
                elif isinstance(action, DeleteRemote):
                    self._store.delete(bucket, self._key(rel))
                    manifest.pop(rel, None)
                    report.deleted_remote.append(rel)
                elif isinstance(action, Forget):
                    manifest.pop(rel, None)
            inflight.wait(manifest)
        finally:
            # What was done is recorded even when a later action failed; transfers
            # under way finish first, and those not yet started are dropped.
            inflight.abandon(manifest)
            pool.shutdown(cancel_futures=True)
            save_manifest(self._manifest_path, manifest)
        return report
