"""Engine and session factories (no globals) and migrations at start."""

from __future__ import annotations

from pathlib import Path

import orjson
from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

MIGRATIONS = Path(__file__).parent / "migrations"


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
        cursor.close()


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker:  # type: ignore[type-arg]
    return async_sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Apply migrations synchronously; call before the event loop starts."""
    command.upgrade(alembic_config(url), revision)


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
