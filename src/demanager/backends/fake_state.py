"""Where the fake backend keeps its workloads: in the server's memory, or in a SQLite
file that several servers share.

The shared file plays the part a cluster plays for real backends: the workloads in it
outlive any one server, and every server given the same directory sees and stops the
same ones. It also keeps a ledger of every launch, so tests can count how often each
instance was started and for which caller action.

Transactions are short and connections wait several seconds for a lock (WAL lets
readers proceed meanwhile), so servers that share the file never see "database is
locked". Calls block: the backend runs them in a worker thread.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

FILE_NAME = "fake-workloads.db"
BUSY_TIMEOUT_SECONDS = 10.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS workloads (
    instance_id TEXT PRIMARY KEY,
    generation INTEGER NOT NULL,
    launched_at INTEGER NOT NULL,
    ready_at REAL NOT NULL,
    token TEXT NOT NULL,
    port INTEGER NOT NULL,
    launched_by INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS launches (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id TEXT NOT NULL,
    generation INTEGER NOT NULL,
    launched_at INTEGER NOT NULL,
    pid INTEGER NOT NULL
);
"""


@dataclass(frozen=True)
class FakeWorkload:
    generation: int
    launched_at: int
    """ms, the launch's ``now_ms``."""
    ready_at: float
    """When it answers its health check, on the store's clock."""
    token: str
    port: int
    """The echo server of the process that launched it."""
    launched_by: int
    """PID of that process."""


class Launch(NamedTuple):
    """One row of the ledger: a workload launched for an instance."""

    instance_id: str
    generation: int
    launched_at: int
    pid: int


class MemoryWorkloads:
    """Workloads of this process only, gone with it."""

    def __init__(self) -> None:
        self._workloads: dict[str, FakeWorkload] = {}

    def put(self, instance_id: str, workload: FakeWorkload) -> None:
        self._workloads[instance_id] = workload

    def get(self, instance_id: str) -> FakeWorkload | None:
        return self._workloads.get(instance_id)

    def __contains__(self, instance_id: str) -> bool:
        return instance_id in self._workloads

    def remove(self, instance_id: str) -> None:
        self._workloads.pop(instance_id, None)

    def close(self) -> None:
        self._workloads.clear()


class SharedWorkloads:
    """Workloads in ``{state_dir}/fake-workloads.db``, shared by every server using it.

    One connection per thread (``sqlite3`` connections are not to be shared by threads
    at once); ``close`` closes them all.
    """

    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / FILE_NAME
        self._local = threading.local()
        self._opened: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        with _open(self.path) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = _connect(self.path)
            self._local.conn = conn
            with self._lock:
                self._opened.append(conn)
        return conn

    def put(self, instance_id: str, workload: FakeWorkload) -> None:
        """Replace the instance's workload and record the launch, in one transaction."""
        conn = self._conn()
        with _write(conn):
            conn.execute(
                "INSERT OR REPLACE INTO workloads (instance_id, generation, launched_at,"
                " ready_at, token, port, launched_by) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (instance_id, workload.generation, workload.launched_at, workload.ready_at,
                 workload.token, workload.port, workload.launched_by),
            )
            conn.execute(
                "INSERT INTO launches (instance_id, generation, launched_at, pid)"
                " VALUES (?, ?, ?, ?)",
                (instance_id, workload.generation, workload.launched_at, workload.launched_by),
            )

    def get(self, instance_id: str) -> FakeWorkload | None:
        row = self._conn().execute(
            "SELECT generation, launched_at, ready_at, token, port, launched_by"
            " FROM workloads WHERE instance_id = ?",
            (instance_id,),
        ).fetchone()
        return None if row is None else FakeWorkload(*row)

    def __contains__(self, instance_id: str) -> bool:
        return self.get(instance_id) is not None

    def remove(self, instance_id: str) -> None:
        conn = self._conn()
        with _write(conn):
            conn.execute("DELETE FROM workloads WHERE instance_id = ?", (instance_id,))

    def close(self) -> None:
        """Close this process's connections; the workloads stay for the other servers."""
        with self._lock:
            opened, self._opened = self._opened, []
        for conn in opened:
            conn.close()
        self._local = threading.local()


def launches(state_dir: Path) -> list[Launch]:
    """Every launch the servers sharing ``state_dir`` made, oldest first."""
    with _open(state_dir / FILE_NAME) as conn:
        rows = conn.execute(
            "SELECT instance_id, generation, launched_at, pid FROM launches ORDER BY seq"
        ).fetchall()
    return [Launch(*row) for row in rows]


def workloads(state_dir: Path) -> dict[str, FakeWorkload]:
    """Every workload that exists now among the servers sharing ``state_dir``."""
    with _open(state_dir / FILE_NAME) as conn:
        rows = conn.execute(
            "SELECT instance_id, generation, launched_at, ready_at, token, port, launched_by"
            " FROM workloads"
        ).fetchall()
    return {row[0]: FakeWorkload(*row[1:]) for row in rows}


def _connect(path: Path) -> sqlite3.Connection:
    # Autocommit mode: ``_write`` opens each write transaction itself. The connection
    # is used by one thread at a time, not always the one that opened it (``close``).
    return sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False
    )


@contextlib.contextmanager
def _open(path: Path) -> Iterator[sqlite3.Connection]:
    conn = _connect(path)
    try:
        yield conn
    finally:
        conn.close()


@contextlib.contextmanager
def _write(conn: sqlite3.Connection) -> Iterator[None]:
    # IMMEDIATE takes the write lock up front, so two writers never deadlock upgrading.
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")

