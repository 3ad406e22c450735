"""The repository counts the host's CPUs, memory and GPUs with every status write, and
gives each GPU to one instance at a time, however many writers race.

Runs on SQLite, and on PostgreSQL when ``DEMANAGER_TEST_POSTGRES_URL`` is set (where
the racing writers are two repositories on two connection pools: two replicas).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from demanager import errors
from demanager.domain.catalog import Catalog, Flavor, Profile
from demanager.domain.hostfit import Inventory
from demanager.domain.instance import Desired, Instance
from demanager.domain.lifecycle import InstanceStatus as S
from demanager.store.database import make_engine, make_sessionmaker
from demanager.store.hostfit import host_scope
from demanager.store.instances import InstanceRepository
from demanager.store.tables import GpuAssignmentRow
from tests import server
from tests.unit import stored

CATALOG = Catalog(
    profiles={"prof": Profile("prof", "prof", "", "CPU", "ns", "img", "tag", None)},
    flavors={
        "gpu1": Flavor("gpu1", "GPU", {"CPU": 1, "GPU": 1, "memory": "1GiB"}),
        "gpu2": Flavor("gpu2", "GPU", {"CPU": 1, "GPU": 2, "memory": "1GiB"}),
        "small": Flavor("small", "CPU", {"CPU": 1, "memory": "1GiB"}),
        "big": Flavor("big", "CPU", {"CPU": 2, "memory": "3GiB"}),
        "huge": Flavor("huge", "CPU", {"CPU": 1, "memory": "64GiB"}),
        "freegpu": Flavor("freegpu", "GPU", {"CPU": 1, "GPU": 1}, promo_type="Free"),
    },
)
HOST = Inventory("node-a", cpus=4, memory_bytes=4 * 2**30, gpus=("0", "1", "2"))
QUOTA = {"project_quota": 10**6, "flavor_quota": None}


def _instance(n: int, status: S, flavor: str) -> Instance:
    return stored.instance(n, status=status, flavor=flavor)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    async with server.migrated_database(tmp_path) as (_, built):
        yield built


def _repo(engine: AsyncEngine, inventory: Inventory = HOST) -> InstanceRepository:
    return InstanceRepository(make_sessionmaker(engine), CATALOG, inventory)


async def _used(engine: AsyncEngine, resource: str) -> int:
    async with engine.connect() as conn:
        value = await conn.scalar(
            text("SELECT used FROM quota_usage WHERE scope = :s"),
            {"s": host_scope(HOST.host, resource)},
        )
    return int(value or 0)


async def _assignments(engine: AsyncEngine) -> dict[str, str]:
    async with engine.connect() as conn:
        rows = await conn.execute(select(GpuAssignmentRow.gpu, GpuAssignmentRow.instance_id))
        return {str(gpu): str(instance) for gpu, instance in rows.all()}


async def test_cpus_and_memory_are_taken_and_given_back_and_refuse_what_does_not_fit(
    engine: AsyncEngine,
) -> None:
    repo = _repo(engine)
    a = await repo.add(_instance(1, S.CREATING, "big"), **QUOTA)
    assert (await _used(engine, "cpus"), await _used(engine, "memory")) == (2000, 3072)
    assert a.gpus is None
    assert await repo.sold_out(None, "big"), "3 GiB more does not fit in the 1 GiB left"
    assert not await repo.sold_out(None, "small")
    with pytest.raises(errors.FlavorSoldOut):
        await repo.add(_instance(2, S.CREATING, "big"), **QUOTA)
    assert await repo.load("DE-2") is None
    assert await _used(engine, "memory") == 3072, "the refused write took nothing"

    stopped = await repo.add(_instance(3, S.STOPPED, "big"), **QUOTA)
    with pytest.raises(errors.NotEnoughResources):
        await repo.transition(stopped, S.STARTING, now_ms=10)
    running = await repo.transition(a, S.RUNNING, now_ms=11)
    await repo.transition(await repo.transition(running, S.STOPPING, now_ms=12), S.STOPPED,
                          now_ms=13)
    assert (await _used(engine, "cpus"), await _used(engine, "memory")) == (0, 0)
    await repo.transition(stopped, S.STARTING, now_ms=14)
    assert await _used(engine, "memory") == 3072
    assert not repo.fits_host("huge") and repo.fits_host("big")


async def test_gpus_are_assigned_whole_reported_and_released(engine: AsyncEngine) -> None:
    repo = _repo(engine)
    one = await repo.add(_instance(1, S.CREATING, "gpu1"), **QUOTA)
    two = await repo.add(_instance(2, S.CREATING, "gpu2"), **QUOTA)
    assert one.gpus == ("0",) and two.gpus == ("1", "2")
    assert (await repo.load(one.id)).gpus == ("0",)  # type: ignore[union-attr]
    assert await _assignments(engine) == {"0": one.id, "1": two.id, "2": two.id}
    assert await repo.sold_out(None, "gpu1")
    with pytest.raises(errors.FlavorSoldOut):
        await repo.add(_instance(3, S.CREATING, "gpu1"), **QUOTA)
    # A CPU flavor still fits: GPUs are counted apart.
    await repo.add(_instance(4, S.CREATING, "small"), **QUOTA)

    failed = await repo.transition(two, S.CREATE_FAILED, now_ms=5)
    assert failed.gpus is None and (await repo.load(two.id)).gpus is None  # type: ignore[union-attr]
    assert await _assignments(engine) == {"0": one.id}
    assert await _used(engine, "gpus") == 1
    # A start takes GPUs again; which ones does not matter, only that they are free.
    stopped = await repo.add(_instance(5, S.STOPPED, "gpu2"), **QUOTA)
    started = await repo.transition(stopped, S.STARTING, now_ms=6)
    assert started.gpus == ("1", "2")
    running = await repo.transition(one, S.RUNNING, now_ms=7)
    unavailable = await repo.transition(running, S.UNAVAILABLE, now_ms=8)
    deleted = await repo.transition(unavailable, S.DELETED, now_ms=9, desired=Desired.DELETED)
    assert deleted.gpus is None and "0" not in await _assignments(engine)


async def test_racing_writers_never_share_a_gpu(engine: AsyncEngine) -> None:
    # Two repositories with pools of their own: on PostgreSQL, two replicas.
    replicas = [_repo(engine), _repo(make_engine_like(engine))]
    try:
        stopped = [
            await replicas[0].add(_instance(n, S.STOPPED, "gpu1"), **QUOTA) for n in range(12)
        ]

        async def start(n: int) -> Instance | None:
            try:
                return await replicas[n % 2].transition(stopped[n], S.STARTING, now_ms=100 + n)
            except errors.NotEnoughResources:
                return None

        started = [i for i in await asyncio.gather(*map(start, range(12))) if i is not None]
        assert len(started) == 3, "three GPUs: three starts, whatever the interleaving"
        gpus = [g for i in started for g in i.gpus or ()]
        assert sorted(gpus) == ["0", "1", "2"]
        assert await _assignments(engine) == {i.gpus[0]: i.id for i in started if i.gpus}
        assert await _used(engine, "gpus") == 3

        async def stop(i: Instance) -> None:
            # STARTING -> START_FAILED gives back; then the others race again.
            await replicas[int(i.id[3:]) % 2].transition(i, S.START_FAILED, now_ms=500)

        await asyncio.gather(*map(stop, started))
        assert await _assignments(engine) == {} and await _used(engine, "gpus") == 0
    finally:
        await replicas[1]._engine.dispose()


def make_engine_like(engine: AsyncEngine) -> AsyncEngine:
    return make_engine(engine.url.render_as_string(hide_password=False))


async def test_recount_sets_the_counters_from_the_holders_and_drops_stale_assignments(
    engine: AsyncEngine,
) -> None:
    plain = InstanceRepository(make_sessionmaker(engine), CATALOG)  # before the feature
    await plain.add(_instance(1, S.RUNNING, "big"), **QUOTA)
    await plain.add(_instance(2, S.STOPPED, "big"), **QUOTA)
    async with engine.begin() as conn:
        await conn.execute(
            GpuAssignmentRow.__table__.insert().values(
                host=HOST.host, gpu="1", instance_id="DE-2", assigned_at=0
            )
        )
    repo = _repo(engine)
    assert not await repo.sold_out(None, "big"), "uncounted yet"
    await repo.recount_host()
    assert (await _used(engine, "cpus"), await _used(engine, "memory")) == (2000, 3072)
    assert await _used(engine, "gpus") == 0
    assert await _assignments(engine) == {}
    assert await repo.sold_out(None, "big")
    await repo.recount_host()  # idempotent
    assert await _used(engine, "memory") == 3072


async def test_giving_host_resources_back_wakes_the_queues_of_free_flavors_that_need_them(
    engine: AsyncEngine,
) -> None:
    repo = _repo(engine)
    freed: list[tuple[str | None, str]] = []
    repo.on_slot_freed(lambda pool, flavor: freed.append((pool, flavor)))
    holder = await repo.add(_instance(1, S.CREATING, "gpu1"), **QUOTA)
    await repo.transition(holder, S.CREATE_FAILED, now_ms=5)
    assert freed == [(None, "gpu1"), (None, "freegpu")]
    plain = InstanceRepository(make_sessionmaker(engine), CATALOG)  # nothing of the host
    freed.clear()
    plain.on_slot_freed(lambda pool, flavor: freed.append((pool, flavor)))
    other = await plain.add(_instance(2, S.CREATING, "gpu1"), **QUOTA)
    await plain.transition(other, S.CREATE_FAILED, now_ms=6)
    assert freed == [(None, "gpu1")]
