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
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from demanager.objectstore.client import ObjectStore
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
    SyncedEntry,
    Upload,
    plan_down,
    plan_up,
)

log = logging.getLogger(__name__)


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
        return self._apply(actions, manifest)

    def up_blocking(self, stamp: str | None = None) -> SyncReport:
        manifest = load_manifest(self._manifest_path)
        remote = self._store.list(self._where.bucket, self._where.prefix)
        actions = plan_up(remote, scan(self._folder), manifest, stamp or _stamp())
        return self._apply(actions, manifest)

    async def down(self) -> SyncReport:
        return await asyncio.to_thread(self.down_blocking)

    async def up(self) -> SyncReport:
        return await asyncio.to_thread(self.up_blocking)

    def _apply(self, actions: list[Action], manifest: dict[str, SyncedEntry]) -> SyncReport:
        report = SyncReport()
        bucket = self._where.bucket
        try:
            for action in actions:
                rel = action.path
                if isinstance(action, Download):
                    target = self._local(rel)
                    if not self._placeable(target):
                        log.warning("not syncing %s: it cannot be a file in the folder", rel)
                        continue
                    etag = self._store.download(bucket, self._key(rel), target)
                    st = target.stat()
                    manifest[rel] = SyncedEntry(etag, st.st_size, st.st_mtime_ns)
                    report.downloaded.append(rel)
                elif isinstance(action, Upload):
                    opened = open_inside(self._folder, self._local(rel))
                    if opened is None:
                        log.warning("not syncing %s: it is no longer a file of the folder", rel)
                        continue
                    with opened as body:
                        # Stat before the upload: a write during it is a change next time.
                        st = os.fstat(body.fileno())
                        etag = self._store.upload(bucket, self._key(rel), body, st.st_size)
                    manifest[rel] = SyncedEntry(etag, st.st_size, st.st_mtime_ns)
                    report.uploaded.append(rel)
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
        finally:
            # What was done is recorded even when a later action failed.
            save_manifest(self._manifest_path, manifest)
        return report
