"""Instances the API reads are remembered by their rows' exact values (``store/memo.py``):
the same row gives the same object, and any change to a column the instance is made of,
by any writer, even one that bumps no version, gives a new one at the next read."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from demanager.domain.validation import ListQuery
from demanager.store.database import make_engine, make_sessionmaker, upgrade
from demanager.store.instances import InstanceRepository
from demanager.store.memo import Memo
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


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'demanager.db'}"
    await asyncio.to_thread(upgrade, url)
    built = make_engine(url)
    yield built
    await built.dispose()


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
    engine: AsyncEngine, read: Any, column: str, value: str, field: str, expected: Any,
) -> None:
    repo = InstanceRepository(make_sessionmaker(engine), CATALOG)
    await repo.add(instance(), project_quota=10, flavor_quota=None)
    before = await read(repo)
    assert await read(repo) is before, "an unchanged row gives the same instance"
    async with engine.begin() as conn:
        await conn.execute(text(f"UPDATE instances SET {column} = {value}"))
    after = await read(repo)
    got = getattr(after, field)
    assert (got.code if field == "failed" else got) == expected
    assert after.version == before.version, "the write bumped no version"
    assert after is not before


async def test_a_lease_taken_by_the_engine_keeps_the_remembered_instance(
    engine: AsyncEngine,
) -> None:
    """The engine's leases change on every sweep; the instance is not made of them."""
    repo = InstanceRepository(make_sessionmaker(engine), CATALOG)
    await repo.add(instance(), project_quota=10, flavor_quota=None)
    before = await _listed(repo)
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE instances SET lease_owner = 'engine-1', lease_until = 5"))
    assert await _listed(repo) is before
