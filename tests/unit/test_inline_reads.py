"""Reads of the API's hot path on a SQLite file run inline on the event loop, on
connections of their own: they see every committed write at once, a busy database
sends them to the async engine, and they can never write."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from demanager.domain.lifecycle import InstanceStatus as S
from demanager.store.database import make_sessionmaker
from demanager.store.instances import InstanceRepository
from demanager.store.reads import Reads
from tests.unit.stored import CATALOG, instance

INSTANCE = instance()


def _statements(engine: Any) -> list[str]:
    seen: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _seen(conn, cursor, statement, parameters, context, many) -> None:  # type: ignore[no-untyped-def]
        seen.append(statement)

    return seen


async def test_inline_reads_see_each_committed_write_at_once(sqlite_engine: AsyncEngine) -> None:
    repo = InstanceRepository(make_sessionmaker(sqlite_engine), CATALOG)
    inline = Reads(sqlite_engine).inline
    assert inline is not None
    read_inline = _statements(inline)
    read_async = _statements(sqlite_engine.sync_engine)
    assert await repo.load(INSTANCE.id) is None
    added = await repo.add(INSTANCE, project_quota=10, flavor_quota=None)
    assert (await repo.load(INSTANCE.id)) == added
    moved = await repo.transition(added, S.RUNNING, now_ms=5)
    assert (await repo.get_live("p", INSTANCE.id)).status is S.RUNNING
    assert (await repo.view("p", INSTANCE.id, INSTANCE.user_id))[0] == moved
    assert read_inline and all(s.lstrip().upper().startswith("SELECT") for s in read_inline)
    assert not [s for s in read_async if "FROM instances" in s and "WHERE instances.id" in s
                and s.lstrip().upper().startswith("SELECT")], "a load went through aiosqlite"


async def test_a_busy_database_sends_the_read_to_the_async_engine(
    sqlite_engine: AsyncEngine,
) -> None:
    repo = InstanceRepository(make_sessionmaker(sqlite_engine), CATALOG)
    await repo.add(INSTANCE, project_quota=10, flavor_quota=None)
    inline = Reads(sqlite_engine).inline
    assert inline is not None
    refused: list[str] = []

    @event.listens_for(inline, "before_cursor_execute")
    def _busy_once(conn, cursor, statement, parameters, context, many) -> None:  # type: ignore[no-untyped-def]
        if not refused:
            refused.append(statement)
            raise sqlite3.OperationalError("database is locked")

    read_async = _statements(sqlite_engine.sync_engine)
    found = await repo.load(INSTANCE.id)
    assert found is not None and found.id == INSTANCE.id
    assert refused and read_async == refused, "the refused statement ran on the async engine"


async def test_another_error_of_an_inline_read_is_raised(sqlite_engine: AsyncEngine) -> None:
    async with Reads(sqlite_engine).connect() as conn:
        with pytest.raises(OperationalError, match="no such table"):
            await conn.execute(text("SELECT * FROM no_such_table"))


async def test_inline_connections_never_write(sqlite_engine: AsyncEngine) -> None:
    repo = InstanceRepository(make_sessionmaker(sqlite_engine), CATALOG)
    await repo.add(INSTANCE, project_quota=10, flavor_quota=None)
    async with Reads(sqlite_engine).connect() as conn:
        with pytest.raises(OperationalError, match="readonly"):
            await conn.execute(text("DELETE FROM instances"))
    assert await repo.load(INSTANCE.id) is not None


async def test_postgresql_and_memory_databases_read_on_the_async_engine() -> None:
    for url in ("sqlite+aiosqlite://", "postgresql+asyncpg://u@127.0.0.1:9/db"):
        built = create_async_engine(url)
        try:
            assert Reads(built).inline is None
        finally:
            await built.dispose()
