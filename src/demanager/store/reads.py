"""Where the API's short reads run.

aiosqlite runs each statement on a thread of its own and hands the statement and its
rows across threads. For the reads of the API's hot path (one instance, a page, the
counts beside them), which take SQLite tens of microseconds, that hand-off and
SQLAlchemy's async adaptation cost more than the query: a GET on SQLite cost about
twice the CPU of the same GET on PostgreSQL (docs/benchmarks.md, Read path). On a
SQLite file these reads therefore run on a plain pysqlite connection on the event
loop's own thread, blocking it for as long as SQLite takes, which is less than the
hand-off would.

In WAL mode a reader does not wait for the writer. Should SQLite still answer busy
(it may while another connection recovers the log after a crash), the statement runs
again on the async engine, which may wait without holding up the loop.

Each read begins its own read transaction, so it sees every write committed before it,
whichever connection wrote it: the consistency tests/api/test_read_path.py checks.
PostgreSQL reads stay on asyncpg (no thread to cross), and an in-memory SQLite
database, private to each connection, has no second connection to read it from.
"""

from __future__ import annotations

import sqlite3
import weakref
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Protocol

import orjson
from sqlalchemy import Connection, CursorResult, Engine, Executable, create_engine, event
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from demanager.store.database import SQLITE_CACHE_SIZE

BUSY_TIMEOUT_SECONDS = 0.1
"""How long an inline read waits on a busy database before it leaves the loop."""


class Reading(Protocol):
    """What a read needs of a connection: ``AsyncConnection`` has it, and so does the
    inline connection."""

    async def execute(
        self, statement: Executable, parameters: Mapping[str, Any] | None = None
    ) -> CursorResult[*tuple[Any, ...]]: ...

    async def scalar(
        self, statement: Executable, parameters: Mapping[str, Any] | None = None
    ) -> Any: ...


class Reads:
    """Connections for reads: inline on a SQLite file, else the async engine's."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._inline = _inline_engine(engine)

    @property
    def inline(self) -> Engine | None:
        """The engine of the inline reads; None where reads use the async engine."""
        return self._inline

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[Reading]:
        if self._inline is None:
            async with self._engine.connect() as conn:
                yield conn
            return
        with self._inline.connect() as sync:
            yield _Inline(sync, self._engine)


class _Inline:
    __slots__ = ("_conn", "_engine")

    def __init__(self, conn: Connection, engine: AsyncEngine) -> None:
        self._conn = conn
        self._engine = engine

    async def execute(
        self, statement: Executable, parameters: Mapping[str, Any] | None = None
    ) -> CursorResult[*tuple[Any, ...]]:
        try:
            return self._conn.execute(statement, parameters)
        except OperationalError as exc:
            if not _busy(exc):
                raise
            self._conn.rollback()
        async with self._engine.connect() as conn:
            return await conn.execute(statement, parameters)

    async def scalar(
        self, statement: Executable, parameters: Mapping[str, Any] | None = None
    ) -> Any:
        return (await self.execute(statement, parameters)).scalar()


def _busy(exc: OperationalError) -> bool:
    cause = exc.orig
    if not isinstance(cause, sqlite3.OperationalError):
        return False
    code = getattr(cause, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(cause) or "busy" in str(cause)


_INLINE: weakref.WeakKeyDictionary[Engine, Engine] = weakref.WeakKeyDictionary()
"""One inline engine per async engine, disposed with it."""


def _inline_engine(engine: AsyncEngine) -> Engine | None:
    url = engine.url
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:") or (
        url.query.get("mode") == "memory"
    ):
        return None
    found = _INLINE.get(engine.sync_engine)
    if found is not None:
        return found
    inline = create_engine(
        url.set(drivername="sqlite+pysqlite"),
        # Any thread may read (a loop in another thread); the pool lends a connection to
        # one reader at a time.
        connect_args={"timeout": BUSY_TIMEOUT_SECONDS, "check_same_thread": False},
        # Connections are held only between two statements of one read, never across a
        # wait, so two suffice; more are made rather than waited for, which would block
        # the loop.
        pool_size=2, max_overflow=-1,
        json_deserializer=orjson.loads,
    )

    @event.listens_for(inline, "connect")
    def _on_connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        cursor = dbapi_connection.cursor()
        # No PRAGMA that takes a lock (the journal mode is the file's, set by the writers'
        # connections): a connection must never wait before its first read.
        cursor.execute(f"PRAGMA cache_size={SQLITE_CACHE_SIZE}")
        cursor.execute("PRAGMA query_only=ON")  # these connections only ever read
        cursor.close()

    _INLINE[engine.sync_engine] = inline

    @event.listens_for(engine.sync_engine, "engine_disposed")
    def _disposed(_engine: Engine) -> None:
        inline.dispose()

    return inline
