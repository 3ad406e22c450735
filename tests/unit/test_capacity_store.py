"""The repository takes and gives back capacity slots with every status write.

Every legal transition is written once, in a scope of its own, and the scope's counter
must move by exactly what ``HOLDS_RESOURCES`` membership says; a write that finds no
free slot changes nothing. Then migration 0007 is run over rows written at 0006.
Runs on SQLite, and on PostgreSQL when ``DEMANAGER_TEST_POSTGRES_URL`` is set.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from demanager import errors
from demanager.domain.catalog import Catalog, Flavor, Pool, Profile
from demanager.domain.instance import Instance, ProjectId
from demanager.domain.lifecycle import HOLDS_RESOURCES, TRANSITIONS
from demanager.domain.lifecycle import InstanceStatus as S
from demanager.store.database import alembic_config, make_sessionmaker, upgrade
from demanager.store.instances import InstanceRepository, capacity_scope
from tests import server
from tests.unit import stored

FLAVOR = "flav"
CATALOG = Catalog(
    profiles={"prof": Profile("prof", "prof", "", "CPU", "ns", "img", "tag", None)},
    flavors={FLAVOR: Flavor(FLAVOR, "CPU", {}, capacity=1)},
    pools={"small": Pool("small", "small", capacity={FLAVOR: 1})},
)


def _instance(n: int, status: S, *, pool: str | None = None, project: str = "p") -> Instance:
    return stored.instance(n, status=status, flavor=FLAVOR, pool_id=pool,
                           project_id=ProjectId(project))


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[tuple[str, AsyncEngine]]:
    async with server.migrated_database(tmp_path) as built:
        yield built


@pytest.fixture
def repo(database: tuple[str, AsyncEngine]) -> InstanceRepository:
    return InstanceRepository(make_sessionmaker(database[1]), CATALOG)


EDGES = [(src, dst) for src, targets in TRANSITIONS.items() for dst in sorted(targets)]


async def test_every_status_write_takes_or_gives_back_by_holds_resources(
    repo: InstanceRepository,
) -> None:
    freed: list[tuple[str | None, str]] = []
    repo.on_slot_freed(lambda pool, flavor: freed.append((pool, flavor)))
    for n, (src, dst) in enumerate(EDGES):
        pool = f"edge-{n}"  # a pool the catalog does not limit: a scope of its own
        instance = await repo.add(_instance(n, src, pool=pool), project_quota=10**6,
                                  flavor_quota=None)
        assert await repo.slots_used(pool, FLAVOR) == int(src in HOLDS_RESOURCES), src
        await repo.transition(instance, dst, now_ms=10**6)
        assert await repo.slots_used(pool, FLAVOR) == int(dst in HOLDS_RESOURCES), (src, dst)
        leaves = src in HOLDS_RESOURCES and dst not in HOLDS_RESOURCES
        assert ((pool, FLAVOR) in freed) is leaves, (src, dst)


async def test_a_full_scope_refuses_the_insert_and_the_transition_and_changes_nothing(
    repo: InstanceRepository, database: tuple[str, AsyncEngine]
) -> None:
    quota = {"project_quota": 100, "flavor_quota": None}
    holder = await repo.add(_instance(1, S.CREATING), **quota)
    with pytest.raises(errors.FlavorSoldOut):
        await repo.add(_instance(2, S.CREATING, project="q"), **quota)
    assert await repo.load("DE-2") is None
    assert await repo.count_live("q") == 0
    async with database[1].connect() as conn:
        used = await conn.scalar(text("SELECT used FROM quota_usage WHERE scope = 'project:q'"))
    assert not used, "the quota taken before the refused slot is rolled back"

    stopped = await repo.add(_instance(3, S.STOPPED), **quota)
    with pytest.raises(errors.NotEnoughResources):
        await repo.transition(stopped, S.STARTING, now_ms=100)
    assert await repo.load("DE-3") == stopped
    queued = await repo.add(_instance(4, S.CREATE_QUEUING), **quota)
    with pytest.raises(errors.NotEnoughResources):
        await repo.transition(queued, S.CREATING, now_ms=100)
    assert await repo.sold_out(None, FLAVOR)

    # The same flavor in a dedicated pool is another scope, with its own capacity.
    in_pool = await repo.add(_instance(5, S.CREATING, pool="small"), **quota)
    assert await repo.sold_out("small", FLAVOR)

    running = await repo.transition(holder, S.RUNNING, now_ms=100)
    failed = await repo.transition(
        await repo.transition(running, S.UNAVAILABLE, now_ms=101), S.START_FAILED, now_ms=102
    )
    assert failed.status is S.START_FAILED and not await repo.sold_out(None, FLAVOR)
    assert await repo.slots_used("small", FLAVOR) == 1
    started = await repo.transition(stopped, S.STARTING, now_ms=103)
    assert await repo.slots_used(None, FLAVOR) == 1
    await repo.transition(in_pool, S.CREATE_FAILED, now_ms=104)
    assert await repo.slots_used("small", FLAVOR) == 0
    assert started.status is S.STARTING


async def test_migration_0007_counts_the_rows_that_hold_resources(
    database: tuple[str, AsyncEngine],
) -> None:
    url, engine = database
    plain = InstanceRepository(make_sessionmaker(engine))  # no catalog: no capacity rows
    statuses = [S.RUNNING, S.STOPPED, S.CREATING, S.CREATE_QUEUING, S.STOPPING, S.DELETED,
                S.START_FAILED, S.UNAVAILABLE]
    for n, status in enumerate(statuses):
        await plain.add(_instance(n, status), project_quota=100, flavor_quota=None)
    await plain.add(_instance(50, S.RUNNING, pool="small"), project_quota=100,
                    flavor_quota=None)
    await plain.add(_instance(51, S.STARTING, pool="small"), project_quota=100,
                    flavor_quota=None)
    # Back to what 0006 had (no capacity counters at all), keeping the rows; the
    # instances were written at the head revision, whose extra columns go down with it.
    await asyncio.to_thread(command.downgrade, alembic_config(url), "0006")
    async with engine.begin() as conn:
        await conn.execute(text("INSERT INTO quota_usage (scope, used) VALUES ('capacity::x', 9)"))

    await asyncio.to_thread(upgrade, url)

    async with engine.connect() as conn:
        rows = dict(
            (await conn.execute(
                text("SELECT scope, used FROM quota_usage WHERE scope LIKE 'capacity:%'")
            )).all()
        )
    assert rows == {capacity_scope(None, FLAVOR): 4, capacity_scope("small", FLAVOR): 2}
