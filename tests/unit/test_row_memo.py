"""Instances the API reads are remembered by their rows' exact values (``store/memo.py``):
the same row gives the same object, and any change to a column the instance is made of,
by any writer, even one that bumps no version, gives a new one at the next read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from demanager.domain.lifecycle import InstanceStatus
from demanager.domain.validation import ListQuery
from demanager.store.database import make_sessionmaker
from demanager.store.instances import InstanceRepository
from demanager.store.memo import Memo
from tests import server
from tests.unit import test_wire_golden as golden
from tests.unit.stored import CATALOG, USER, instance


def test_a_memo_builds_once_per_key_and_forgets_the_oldest_first() -> None:
    built: list[tuple[int, ...]] = []

    def build(key: tuple[int, ...]) -> list[int]:
        built.append(key)
        return list(key)

    memo: Memo[tuple[int, ...], list[int]] = Memo(build, capacity=2)
    first = memo((1,))
    assert memo((1,)) is first and built == [(1,)]
    assert memo((2,)) == [2] and memo((3,)) == [3]
    assert len(memo) == 2
    assert memo((1,)) is not first, "the oldest key was forgotten"
    assert built == [(1,), (2,), (3,), (1,)]
    memo.clear()
    assert len(memo) == 0
    with pytest.raises(ValueError):
        Memo(build, capacity=0)


PAGE = ListQuery()


async def _listed(repo: InstanceRepository) -> Any:
    return (await repo.list("p", PAGE, USER))[1][0]


async def _viewed(repo: InstanceRepository) -> Any:
    return (await repo.view("p", "DE-1", USER))[0]


@pytest.mark.parametrize("read", [_listed, _viewed], ids=["list", "view"])
@pytest.mark.parametrize(("column", "value", "field", "expected"), [
    ("description", "'changed'", "description", "changed"),
    ("annotations", """'{"team": "x"}'""", "annotations", {"team": "x"}),
    ("failed", """'{"code": "ModelArts.6360", "message": "m", "detail": {}}'""",
     "failed", "ModelArts.6360"),
    ("gpus", """'["0", "2"]'""", "gpus", ("0", "2")),
    ("stop_at", "99", "stop_at", 99),
])
async def test_a_changed_column_is_read_at_once_without_a_version_bump(
    sqlite_engine: AsyncEngine, read: Any, column: str, value: str, field: str, expected: Any,
) -> None:
    repo = InstanceRepository(make_sessionmaker(sqlite_engine), CATALOG)
    await repo.add(instance(), project_quota=10, flavor_quota=None)
    before = await read(repo)
    assert await read(repo) is before, "an unchanged row gives the same instance"
    async with sqlite_engine.begin() as conn:
        await conn.execute(text(f"UPDATE instances SET {column} = {value}"))
    after = await read(repo)
    got = getattr(after, field)
    assert (got.code if field == "failed" else got) == expected
    assert after.version == before.version, "the write bumped no version"
    assert after is not before


async def test_a_lease_taken_by_the_engine_keeps_the_remembered_instance(
    sqlite_engine: AsyncEngine,
) -> None:
    """The engine's leases change on every sweep; the instance is not made of them."""
    repo = InstanceRepository(make_sessionmaker(sqlite_engine), CATALOG)
    await repo.add(instance(), project_quota=10, flavor_quota=None)
    before = await _listed(repo)
    async with sqlite_engine.begin() as conn:
        await conn.execute(text("UPDATE instances SET lease_owner = 'engine-1', lease_until = 5"))
    assert await _listed(repo) is before


async def test_every_field_of_varied_instances_reads_as_the_table_reads(tmp_path: Path) -> None:
    """The API's reads build instances from one JSON array per row (``store/rowjson.py``):
    200 varied instances (every status, null and absent forms, non-ASCII text) come back
    field for field as a plain read of the table gives them. On SQLite, and on
    PostgreSQL when ``DEMANAGER_TEST_POSTGRES_URL`` is set."""
    cat = golden.catalog()
    items = golden.instances(cat)
    async with server.migrated_database(tmp_path) as (_, engine):
        repo = InstanceRepository(make_sessionmaker(engine))  # no capacity to refuse
        for item in items:
            await repo.add(item, project_quota=1000, flavor_quota=None)
        by_table = {i.id: await repo.load(i.id) for i in items}
        listed = [i for workspace in ("0", "ws-analytics") for i in (await repo.list(
            golden.PROJECT, ListQuery(show_self=False, workspace_id=workspace), USER))[1]]
        assert len(listed) == sum(i.status is not InstanceStatus.DELETED for i in items)
        for got in listed:
            assert got == by_table[got.id], got.id
        for item in items:
            if item.status is not InstanceStatus.DELETED:
                viewed, _ = await repo.view(golden.PROJECT, item.id, item.user_id)
                assert viewed == by_table[item.id], item.id
        # SQLite's booleans are 0 and 1 in the array, and equal to False and True.
        assert all(type(i.cleanup_pending) is bool and type(i.frozen) is bool for i in listed)
