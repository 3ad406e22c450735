"""``demanager backup`` and ``restore`` on SQLite: a round trip, an online snapshot taken
while another connection writes, what a restore refuses, and a backup of an older
schema upgraded on restore."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from demanager.cli.main import app
from demanager.store.backup import hold_data_dir
from demanager.store.database import upgrade
from tests.migrations.test_upgrade import HEAD, REVISIONS
from tests.server import traversable_dir


@pytest.fixture
def data_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    base = traversable_dir("demanager-backup-")
    monkeypatch.setenv("DEMANAGER_DATA_DIR", str(base / "data"))
    monkeypatch.delenv("DEMANAGER_DATABASE_URL", raising=False)
    monkeypatch.delenv("DEMANAGER_SECRET_KEY", raising=False)
    yield base / "data"
    shutil.rmtree(base, ignore_errors=True)


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output.strip()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _users() -> str:
    code, listed = _run("users", "list")
    assert code == 0, listed
    return listed


def test_round_trip(data_dir: Path) -> None:
    code, token = _run("tokens", "create", "--project", "team-a", "--user", "alice")
    assert code == 0
    assert _run("users", "create", "bob", "--project", "team-b", "--role", "admin")[0] == 0
    before = _users()
    key = (data_dir / "server.key").read_bytes()
    dest = data_dir.parent / "backup"

    code, said = _run("backup", str(dest))
    assert code == 0, said
    assert said.startswith(f"backed up schema revision {HEAD} to ")
    assert _mode(dest) == 0o700
    assert sorted(p.name for p in dest.iterdir()) == [
        "demanager.db", "manifest.json", "operator-token", "server.key"]
    assert {_mode(p) for p in dest.iterdir()} == {0o600}
    assert json.loads((dest / "manifest.json").read_text())["revision"] == HEAD
    assert not list(data_dir.parent.glob(".backup.partial-*"))

    # Lose everything the backup holds: a different user set, another key, no database.
    assert _run("users", "delete", "bob")[0] == 0
    for name in ("demanager.db", "demanager.db-wal", "demanager.db-shm", "server.key"):
        (data_dir / name).unlink(missing_ok=True)
    (data_dir / "server.key").write_text("00" * 32)
    code, said = _run("restore", str(dest))
    assert code == 0, said
    assert said.endswith(f"the database is at revision {HEAD}")
    assert _users() == before
    assert (data_dir / "server.key").read_bytes() == key
    assert _mode(data_dir / "server.key") == 0o600
    assert _mode(data_dir / "demanager.db") == 0o600
    # The token's digest is keyed with the restored key: revoking it finds it.
    assert _run("tokens", "revoke", token.splitlines()[-1]) == (0, "revoked")

    code, said = _run("backup", str(dest))
    assert code == 1 and "already exists" in said


def test_an_online_backup_is_a_consistent_snapshot(data_dir: Path) -> None:
    assert _run("db", "upgrade")[0] == 0
    database = data_dir / "demanager.db"
    done = threading.Event()

    def write() -> None:
        # What a serving server does meanwhile: small WAL transactions, one after another.
        connection = sqlite3.connect(database, timeout=30)
        connection.execute("PRAGMA journal_mode=WAL")
        n = 0
        while not done.is_set():
            with connection:
                connection.execute(
                    "INSERT INTO engine_replicas (owner, node, started_at, seen_at) "
                    "VALUES (?, 'node', ?, ?)", (f"owner-{n}", n, n))
            n += 1
        connection.close()

    writer = threading.Thread(target=write)
    writer.start()
    try:
        for i in range(3):
            code, said = _run("backup", str(data_dir.parent / f"b{i}"))
            assert code == 0, said
    finally:
        done.set()
        writer.join()
    for i in range(3):
        snapshot = sqlite3.connect(data_dir.parent / f"b{i}" / "demanager.db")
        assert snapshot.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert snapshot.execute("PRAGMA journal_mode").fetchone() == ("delete",)
        owners = [row[0] for row in snapshot.execute("SELECT owner FROM engine_replicas")]
        # A prefix of the writes, with no gap: each transaction is in or out whole.
        assert sorted(owners, key=lambda o: int(o.split("-")[1])) == [
            f"owner-{n}" for n in range(len(owners))]
        snapshot.close()
    assert not (data_dir.parent / "b0" / "demanager.db-wal").exists()


def test_a_restore_refuses_while_a_server_serves(data_dir: Path) -> None:
    dest = data_dir.parent / "backup"
    assert _run("db", "upgrade")[0] == 0
    assert _run("backup", str(dest))[0] == 0
    lock = hold_data_dir(data_dir)
    try:
        code, said = _run("restore", str(dest))
        assert code == 1 and "a server is running on" in said
        assert _run("restore", "--force", str(dest))[0] == 0
    finally:
        os.close(lock)
    assert _run("restore", str(dest))[0] == 0


def test_a_restore_refuses_a_damaged_or_newer_backup(data_dir: Path) -> None:
    dest = data_dir.parent / "backup"
    assert _run("tokens", "create", "--project", "p", "--user", "u")[0] == 0
    assert _run("backup", str(dest))[0] == 0
    manifest = json.loads((dest / "manifest.json").read_text())
    original = (dest / "demanager.db").read_bytes()

    # As a later release would leave it: a revision this one does not know.
    with sqlite3.connect(dest / "demanager.db") as newer:
        newer.execute("UPDATE alembic_version SET version_num = '9999'")
    newer.close()
    digest = hashlib.sha256((dest / "demanager.db").read_bytes()).hexdigest()
    (dest / "manifest.json").write_text(
        json.dumps({**manifest, "files": {**manifest["files"], "demanager.db": digest}}))
    code, said = _run("restore", str(dest))
    assert code == 1 and "revision 9999 is newer than this release's" in said

    (dest / "demanager.db").write_bytes(original)
    (dest / "manifest.json").write_text(json.dumps(manifest))
    assert _run("restore", str(dest))[0] == 0
    with (dest / "server.key").open("a") as key:
        key.write("x")
    code, said = _run("restore", str(dest))
    assert code == 1 and "server.key is missing or changed" in said

    code, said = _run("restore", str(data_dir))
    assert code == 1 and "is not a demanager backup" in said


def test_a_backup_of_an_older_schema_is_upgraded_on_restore(data_dir: Path) -> None:
    old = REVISIONS[-2]
    data_dir.mkdir(parents=True)
    upgrade(f"sqlite+aiosqlite:///{data_dir / 'demanager.db'}", old)
    dest = data_dir.parent / "backup"
    code, said = _run("backup", str(dest))
    assert code == 0 and f"schema revision {old} " in said
    assert _run("db", "upgrade")[0] == 0
    assert _run("db", "current") == (0, f"{HEAD} (head)")
    code, history = _run("db", "history")
    assert code == 0 and [line.split("\t")[0] for line in history.splitlines()] == REVISIONS
    code, said = _run("restore", str(dest))
    assert code == 0, said
    assert f"(schema revision {old}); the database is at revision {HEAD}" in said
    assert _run("db", "current") == (0, f"{HEAD} (head)")


@pytest.mark.parametrize("command", ["backup", "restore"])
def test_postgresql_is_backed_up_with_its_own_tools(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    monkeypatch.setenv("DEMANAGER_DATABASE_URL", "postgresql+asyncpg://dm@db.example/dm")
    code, said = _run(command, str(data_dir.parent / "backup"))
    assert code == 2
    assert ("pg_dump" if command == "backup" else "pg_restore") in said
    assert not (data_dir.parent / "backup").exists()


def test_a_restore_over_a_crashed_servers_database_keeps_it_whole(data_dir: Path) -> None:
    """A server killed mid-way leaves a WAL beside the database: the restore must win
    over it, not be undone by it at the next open."""
    import subprocess
    import sys

    dest = data_dir.parent / "backup"
    assert _run("users", "create", "kept", "--project", "p")[0] == 0
    assert _run("backup", str(dest))[0] == 0
    crash = (
        "import os, sqlite3, sys\n"
        "c = sqlite3.connect(sys.argv[1])\n"
        "c.execute('PRAGMA journal_mode=WAL')\n"
        "c.execute('PRAGMA wal_autocheckpoint=0')\n"
        "with c:\n"
        "    c.execute(\"DELETE FROM users WHERE name = 'kept'\")\n"
        "os._exit(0)\n"
    )
    database = data_dir / "demanager.db"
    subprocess.run([sys.executable, "-c", crash, str(database)], check=True, timeout=60)
    assert (data_dir / "demanager.db-wal").stat().st_size > 0
    assert "kept" not in _users()

    assert _run("restore", str(dest))[0] == 0
    assert "kept" in _users()
    with sqlite3.connect(database) as check:
        assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    check.close()
