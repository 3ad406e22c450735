"""Backups of an embedded (SQLite) deployment: the database and the data dir's secrets.

A backup is a directory (0700) holding ``demanager.db``, a consistent snapshot taken
with SQLite's online backup API while the server keeps writing, the secrets a restore
needs to make sense of it (``server.key``: token digests and encrypted storage keys;
``operator-token``), and ``manifest.json``: the schema revision and a SHA-256 of each
file. It is built under a temporary name and renamed at the end, so a directory with
the final name is always complete. Volumes and workloads are not in it: they are the
users' data and live processes, which the storage's own tools and the backends keep.

A running server holds a shared lock on ``server.lock`` in its data dir; a restore
takes it exclusively, so it cannot replace the database under a live server.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

FORMAT = 1
MANIFEST = "manifest.json"
DATABASE = "demanager.db"
SECRETS = ("server.key", "operator-token")
"""Data-dir files the database depends on, copied when present (a configured
``DEMANAGER_SECRET_KEY`` or bootstrap token leaves no file)."""
LOCK = "server.lock"


class BackupError(Exception):
    """A backup or restore refused; nothing was changed."""


@dataclass(frozen=True)
class Manifest:
    revision: str | None
    created_at: str
    version: str
    files: dict[str, str]
    """File name -> SHA-256 of its content."""

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": FORMAT,
                "revision": self.revision,
                "created_at": self.created_at,
                "demanager_version": self.version,
                "files": self.files,
            },
            indent=2,
        )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _revision(connection: sqlite3.Connection) -> str | None:
    try:
        row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.OperationalError:  # never migrated
        return None
    return None if row is None else str(row[0])


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def create_backup(
    database: Path, data_dir: Path, dest: Path, *, created_at: str, version: str
) -> Manifest:
    """Snapshot ``database`` and the data dir's secrets into the new directory ``dest``."""
    if dest.exists():
        raise BackupError(f"{dest} already exists: a backup never overwrites anything")
    if not database.is_file():
        raise BackupError(f"no database at {database}")
    if not dest.parent.is_dir():
        raise BackupError(f"{dest.parent} is not a directory")
    partial = dest.with_name(f".{dest.name}.partial-{uuid.uuid4().hex[:8]}")
    partial.mkdir(mode=0o700)
    try:
        snapshot = partial / DATABASE
        _write_private(snapshot, b"")
        source = sqlite3.connect(database, timeout=30)
        target = sqlite3.connect(snapshot)
        try:
            # One step (pages=-1) reads the whole database in one read transaction: a
            # consistent snapshot, WAL content included, while writers go on in WAL mode.
            source.backup(target)
            # The copy is one self-contained file, whatever the live database's mode.
            target.execute("PRAGMA journal_mode=DELETE")
            checked = target.execute("PRAGMA integrity_check").fetchone()
            if checked != ("ok",):
                raise BackupError(f"the snapshot fails SQLite's integrity check: {checked}")
            revision = _revision(target)
        finally:
            target.close()
            source.close()
        files = {DATABASE: _sha256(snapshot)}
        for name in SECRETS:
            with contextlib.suppress(FileNotFoundError):
                _write_private(partial / name, (data_dir / name).read_bytes())
                files[name] = _sha256(partial / name)
        manifest = Manifest(revision, created_at, version, files)
        _write_private(partial / MANIFEST, manifest.to_json().encode())
        partial.rename(dest)
    except BaseException:
        for entry in partial.iterdir():
            entry.unlink()
        partial.rmdir()
        raise
    return manifest


def read_backup(src: Path) -> Manifest:
    """The backup's manifest, once every file it names is present and intact."""
    try:
        raw = json.loads((src / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BackupError(f"{src} is not a demanager backup (no {MANIFEST})") from None
    except (OSError, ValueError) as exc:
        raise BackupError(f"{src / MANIFEST} cannot be read: {exc}") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise BackupError(f"{src} is a backup in a format this release does not know")
    files = raw.get("files")
    if not isinstance(files, dict) or DATABASE not in files:
        raise BackupError(f"{src / MANIFEST} names no database")
    for name, digest in files.items():
        if name not in (DATABASE, *SECRETS):
            raise BackupError(f"{src / MANIFEST} names an unknown file {name!r}")
        if not (src / name).is_file() or _sha256(src / name) != digest:
            raise BackupError(f"{src / name} is missing or changed since the backup")
    snapshot = sqlite3.connect(f"file:{src / DATABASE}?mode=ro", uri=True)
    try:
        # The database's own word, not the manifest's, on what a restore must upgrade.
        revision = _revision(snapshot)
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{src / DATABASE} is not a readable database: {exc}") from None
    finally:
        snapshot.close()
    return Manifest(revision, str(raw.get("created_at")), str(raw.get("demanager_version")),
                    dict(files))


def restore_backup(src: Path, manifest: Manifest, database: Path, data_dir: Path) -> None:
    """Replace ``database``'s content and the data dir's secrets with the backup's.

    The database is written through SQLite's backup API into the live file rather than
    renamed over it: a journal or WAL left beside it then stays consistent with it."""
    if not database.exists():
        database.parent.mkdir(parents=True, exist_ok=True)
        _write_private(database, b"")
    source = sqlite3.connect(f"file:{src / DATABASE}?mode=ro", uri=True)
    target = sqlite3.connect(database, timeout=30)
    try:
        source.backup(target)
    finally:
        target.close()
        source.close()
    for name in SECRETS:
        if name not in manifest.files:
            continue
        staged = data_dir / f".{name}.restore-{uuid.uuid4().hex[:8]}"
        _write_private(staged, (src / name).read_bytes())
        staged.replace(data_dir / name)


def hold_data_dir(data_dir: Path) -> int:
    """Take the shared lock a serving server holds for its whole life; the returned
    descriptor is not inherited by children, so workloads that outlive the server do
    not keep it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_SH)
    return fd


@contextlib.contextmanager
def exclusive_data_dir(data_dir: Path, *, force: bool = False) -> Iterator[None]:
    """Hold the data dir exclusively, or raise BackupError if a server serves from it
    (with ``force``, go on regardless)."""
    fd = os.open(data_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not force:
                raise BackupError(
                    f"a server is running on {data_dir}: stop it first (or --force)"
                ) from None
        yield
    finally:
        os.close(fd)
