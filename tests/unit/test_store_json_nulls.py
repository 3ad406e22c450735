"""Nullable JSON columns store SQL NULL, so the sweep's ``handle IS NOT NULL`` filter works.

Runs on SQLite, and on PostgreSQL when ``DEMANAGER_TEST_POSTGRES_URL`` is set.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import text

from demanager.domain.lifecycle import InstanceStatus
from demanager.engine.runtime import Runtime
from demanager.identity.principal import Principal, Role
from demanager.settings import Settings
from demanager.store.database import alembic_config, make_engine, upgrade
from tests import server
from tests.conftest import MINIMAL_BODY

OWNER = Principal("0" * 32, "alice", "p", Role.MEMBER)
BODY = {**MINIMAL_BODY, "name": "a"}


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    database = await asyncio.to_thread(server.TestDatabase)
    settings = Settings(
        data_dir=tmp_path, backend="fake", bootstrap_token="t", database_url=database.url
    )
    await asyncio.to_thread(upgrade, settings.sqlalchemy_url)
    built = await Runtime.build(settings)
    try:
        yield built
    finally:
        await built.close()
        await asyncio.to_thread(database.drop)


async def _stopped(runtime: Runtime) -> str:
    instance = await runtime.service.create(principal=OWNER, body=BODY)
    await runtime.reconciler.settle()
    await runtime.service.act(principal=OWNER, instance_id=instance.id, body={"action": "stop"})
    await runtime.reconciler.settle()
    stopped = await runtime.service.get(principal=OWNER, instance_id=instance.id)
    assert stopped.status is InstanceStatus.STOPPED
    assert stopped.handle is None
    return instance.id


async def test_defect_03_stopped_instance_is_not_swept(runtime: Runtime) -> None:
    instance_id = await _stopped(runtime)
    assert instance_id not in {i.id for i in await runtime.instances.needing_attention()}


async def test_defect_03_migration_turns_json_null_into_sql_null(runtime: Runtime) -> None:
    instance_id = await _stopped(runtime)
    url = runtime.settings.sqlalchemy_url
    engine = make_engine(url)
    try:
        # What the earlier mapping wrote for None.
        async with engine.begin() as conn:
            await conn.execute(
                text("UPDATE instances SET handle = 'null', failed = 'null', endpoint = 'null'")
            )
        assert instance_id in {i.id for i in await runtime.instances.needing_attention()}
        await asyncio.to_thread(command.downgrade, alembic_config(url), "0004")
        await asyncio.to_thread(upgrade, url)
        async with engine.connect() as conn:
            nulls = await conn.scalar(
                text(
                    "SELECT count(*) FROM instances "
                    "WHERE handle IS NULL AND failed IS NULL AND endpoint IS NULL"
                )
            )
        assert nulls == 1
        assert instance_id not in {i.id for i in await runtime.instances.needing_attention()}
    finally:
        await engine.dispose()
