"""Engine and session factories (no globals) and migrations at start.

The server itself never imports alembic (about 10 MiB of its memory): at start it reads
the schema's revision, and only a database behind this release is migrated, by a child
interpreter. The CLI's ``db`` commands and the tests use alembic directly.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
from sqlalchemy import event, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

if TYPE_CHECKING:
    from alembic.config import Config

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
URL_VARIABLE = "DEMANAGER_MIGRATE_URL"
"""How the child that migrates gets the database URL: not on its command line, which
every user of the host can read."""


SQLITE_CACHE_SIZE = -256
"""Each SQLite connection's page cache: 256 KiB (see ``_tune_sqlite``)."""


def make_engine(url: str) -> AsyncEngine:
    """JSON columns are read with orjson: an instance row has five of them, and decoding
    them with the standard library was a tenth of a list request (docs/benchmarks.md).
    Writes keep the standard library's encoder, whose text every reader accepts."""
    if url.startswith("sqlite"):
        # Enough pooled connections for the API, the proxy's per-request token checks and
        # the engine at once: an overflow connection is a new thread, opened and closed
        # on every request that needs it.
        engine = create_async_engine(
            url, connect_args={"timeout": 30}, pool_size=20, max_overflow=10,
            json_deserializer=orjson.loads,
        )
        _tune_sqlite(engine.sync_engine)
        return engine
    return create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True,
                               json_deserializer=orjson.loads)


def _tune_sqlite(engine: Engine) -> None:
    # WAL lets readers (the API) proceed while the engine writes.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        # Each pooled connection keeps its own page cache (2 MiB by default): with 20 of
        # them that is the server's largest cost per instance stored. The operating
        # system caches the file once for all of them, and a page read from it costs
        # microseconds against milliseconds of a request's Python work.
        cursor.execute(f"PRAGMA cache_size={SQLITE_CACHE_SIZE}")
        cursor.close()


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker:  # type: ignore[type-arg]
    return async_sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Apply migrations synchronously; call before the event loop starts."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def head_revision() -> str:
    """The newest schema revision this release knows. Revisions are numbered in order,
    one file each, so the newest file's number is the head (a test holds alembic's own
    answer to it)."""
    return max(p.name.split("_", 1)[0] for p in (MIGRATIONS / "versions").glob("[0-9]*_*.py"))


async def current_revisions(engine: AsyncEngine) -> frozenset[str]:
    """The database's schema revisions: empty for a database without a schema."""
    async with engine.connect() as conn:
        try:
            rows = await conn.execute(text("SELECT version_num FROM alembic_version"))
        except SQLAlchemyError:
            return frozenset()
        return frozenset(str(row[0]) for row in rows)


class MigrationFailed(RuntimeError):
    pass


def upgrade_in_child(url: str) -> None:
    """Migrate to the head in a child interpreter (blocking: run it in a thread). What
    the migrations say is logged here, as if they had run in this process."""
    done = subprocess.run(
        [sys.executable, "-m", "demanager.store.migrate"],
        env={**os.environ, URL_VARIABLE: url}, stdin=subprocess.DEVNULL,
        capture_output=True, text=True, check=False,
    )
    lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
    for line in lines:
        log.log(logging.INFO if done.returncode == 0 else logging.ERROR, "migration: %s", line)
    if done.returncode != 0:
        raise MigrationFailed(
            "migrating the database failed: " + (lines[-1] if lines else f"exit {done.returncode}")
        )


async def schema_revisions(engine: AsyncEngine) -> tuple[str | None, str | None]:
    """(the database's migration revision, the newest this release knows)."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    async with engine.connect() as connection:
        current = await connection.run_sync(
            lambda sync: MigrationContext.configure(sync).get_current_revision()
        )
    head = ScriptDirectory.from_config(alembic_config(str(engine.url))).get_current_head()
    return current, head
