"""The project repository: settings round trips, and a freeze racing creates and deletes.

A create either commits before a freeze of its project (and is frozen with the others)
or reads the freeze and is refused; a freeze and deletes never wait for each other.
Runs on SQLite, and on PostgreSQL (where the race is real) when
``DEMANAGER_TEST_POSTGRES_URL`` is set.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from demanager import errors
from demanager.domain.instance import Desired, Instance, InstanceId, ProjectId
from demanager.domain.lifecycle import InstanceStatus as S
from demanager.domain.tenancy import ProjectSettings
from demanager.store.database import make_sessionmaker
from demanager.store.instances import InstanceRepository
from demanager.store.projects import ProjectRepository
from tests import server
from tests.unit.stored import CATALOG, instance

ROUNDS = 5
CREATES = 12


def _instance(n: int, project: str, status: S = S.STOPPED) -> Instance:
    return instance(n, id=InstanceId(f"DE-{project}-{n}"), project_id=ProjectId(project),
                    status=status, desired=Desired.STOPPED, requested_at=None)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    async with server.migrated_database(tmp_path) as (_, built):
        yield built


@pytest.fixture
def stores(engine: AsyncEngine) -> tuple[InstanceRepository, ProjectRepository]:
    sessions = make_sessionmaker(engine)
    return InstanceRepository(sessions, CATALOG), ProjectRepository(sessions)


async def test_settings_round_trip(stores: tuple[InstanceRepository, ProjectRepository]) -> None:
    instances, projects = stores
    assert await projects.get("p") is None
    await projects.set_quota("p", 3, now_ms=1)
    await projects.set_quota("p", 4, now_ms=2)
    assert await projects.get("p") == ProjectSettings("p", 4, False, 2)
    assert await projects.freeze("p", now_ms=3) == 0
    await projects.set_quota("p", None, now_ms=4)
    assert await projects.get("p") == ProjectSettings("p", None, True, 4)
    await instances.add(_instance(1, "q"), project_quota=10, flavor_quota=None)
    listed = {s.settings.project_id: (s.live, s.frozen_instances) for s in await projects.list()}
    assert listed == {"p": (0, 0), "q": (1, 0)}


async def test_a_create_racing_a_freeze_is_frozen_with_the_others_or_refused(
    stores: tuple[InstanceRepository, ProjectRepository],
) -> None:
    instances, projects = stores
    for round_ in range(ROUNDS):
        project = f"race{round_}"

        async def create(n: int, project: str = project) -> bool:
            try:
                await instances.add(_instance(n, project), project_quota=100, flavor_quota=None)
            except errors.ProjectFrozen:
                return False
            return True

        async def freeze(project: str = project, delay: float = 0.001 * round_) -> int:
            await asyncio.sleep(delay)
            return await projects.freeze(project, now_ms=10)

        *created, _ = await asyncio.gather(*(create(n) for n in range(CREATES)), freeze())
        live = next(s for s in await projects.list() if s.settings.project_id == project)
        # Every create that got in was frozen by the freeze; none slipped past it.
        assert live.live == sum(created) == live.frozen_instances
        with pytest.raises(errors.ProjectFrozen):
            await instances.add(_instance(99, project), project_quota=100, flavor_quota=None)


async def test_a_freeze_and_deletes_never_wait_for_each_other(
    stores: tuple[InstanceRepository, ProjectRepository],
) -> None:
    instances, projects = stores
    for n in range(CREATES):
        await instances.add(_instance(n, "p"), project_quota=100, flavor_quota=None)

    async def delete(n: int) -> None:
        for _ in range(20):
            current = await instances.load(f"DE-p-{n}")
            assert current is not None
            try:
                await instances.transition(current, S.DELETED, now_ms=20, cleanup_pending=True)
                return
            except errors.ConcurrentUpdate:  # the freeze wrote the row: read it again
                continue
        raise AssertionError(f"DE-p-{n} was never deleted")

    await asyncio.wait_for(
        asyncio.gather(*(delete(n) for n in range(0, CREATES, 2)),
                       projects.freeze("p", now_ms=10)),
        timeout=60,
    )
    state = next(s for s in await projects.list() if s.settings.project_id == "p")
    assert state.live == state.frozen_instances == CREATES // 2
    assert await instances.count_live("p") == CREATES // 2


async def test_an_instance_is_thawed_alone_only_outside_a_frozen_project(
    stores: tuple[InstanceRepository, ProjectRepository],
) -> None:
    instances, projects = stores
    await instances.add(_instance(1, "p"), project_quota=10, flavor_quota=None)
    assert await projects.set_instance_frozen("DE-p-1", True, now_ms=5)
    assert not await projects.set_instance_frozen("DE-p-1", True, now_ms=6)
    frozen = await instances.load("DE-p-1")
    assert frozen is not None and frozen.frozen and frozen.updated_at == 5
    await projects.freeze("p", now_ms=7)
    with pytest.raises(errors.ProjectFrozen):
        await projects.set_instance_frozen("DE-p-1", False, now_ms=8)
    assert await projects.unfreeze("p", now_ms=9) == 1
    with pytest.raises(errors.InstanceNotFound):
        await projects.set_instance_frozen("DE-nope", True, now_ms=10)
