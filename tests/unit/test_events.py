"""The event log: the builders' kinds, actors and messages (pure), and the store's
appends, pages and purge on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from demanager import errors
from demanager.domain import events
from demanager.domain.catalog import Catalog, Flavor, Profile
from demanager.domain.events import Event, EventKind
from demanager.domain.instance import (
    FailedReason,
    Instance,
    ProjectId,
    UserId,
)
from demanager.domain.lifecycle import InstanceStatus as S
from demanager.engine import events as engine_events
from demanager.engine.clock import FakeClock
from demanager.engine.events import EventService
from demanager.identity.principal import Principal, Role
from demanager.store.database import make_sessionmaker
from demanager.store.events import EventFilter, EventRepository
from demanager.store.instances import InstanceRepository
from tests import server
from tests.unit import stored

FLAVOR = "flav"
CATALOG = Catalog(
    profiles={"prof": Profile("prof", "prof", "", "CPU", "ns", "img", "tag", None)},
    flavors={FLAVOR: Flavor(FLAVOR, "CPU", {})},
    pools={},
)


def _instance(n: int, status: S = S.CREATING, *, project: str = "p", at: int = 1000) -> Instance:
    return stored.instance(n, status=status, flavor=FLAVOR, project_id=ProjectId(project),
                           created_at=at, updated_at=at, requested_at=at)


# --- builders --------------------------------------------------------------------------


def _kind(before: S, after: S, actor: str = events.ENGINE, **changes: object) -> EventKind:
    draft = events.for_transition(
        _instance(1, before), _instance(1, after).evolve(**changes), actor=actor, now_ms=4500
    )
    assert draft is not None
    return draft.kind


def test_each_move_names_what_happened() -> None:
    assert _kind(S.CREATING, S.RUNNING) is EventKind.READY
    assert _kind(S.STARTING, S.RUNNING) is EventKind.READY
    assert _kind(S.UNAVAILABLE, S.RUNNING) is EventKind.HEALTH_REGAINED
    assert _kind(S.RUNNING, S.UNAVAILABLE) is EventKind.HEALTH_LOST
    assert _kind(S.CREATING, S.CREATE_FAILED) is EventKind.FAILED
    assert _kind(S.STARTING, S.START_FAILED) is EventKind.FAILED
    assert _kind(S.CREATE_QUEUING, S.CREATING) is EventKind.ADMITTED
    assert _kind(S.START_QUEUING, S.READY_TO_START) is EventKind.ADMITTED
    assert _kind(S.STOPPED, S.START_QUEUING, "user:a") is EventKind.QUEUED
    assert _kind(S.STOPPED, S.STARTING, "user:a") is EventKind.START_REQUESTED
    assert _kind(S.RUNNING, S.RESTARTING, "user:a") is EventKind.RESTART_REQUESTED
    assert _kind(S.RUNNING, S.STOPPING, "user:a") is EventKind.STOP_REQUESTED
    assert _kind(S.START_QUEUING, S.STOPPED, "user:a") is EventKind.STOPPED
    assert _kind(S.STOPPED, S.DELETED, "user:a") is EventKind.DELETED


def test_steps_between_events_say_nothing() -> None:
    assert events.for_transition(
        _instance(1, S.READY_TO_START), _instance(1, S.STARTING), actor="engine", now_ms=1
    ) is None


def test_ready_tells_how_long_the_start_took() -> None:
    draft = events.for_transition(
        _instance(1, S.STARTING, at=1000), _instance(1, S.RUNNING, at=1000),
        actor="engine", now_ms=4500,
    )
    assert draft is not None
    assert draft.detail == {"start_ms": 3500}
    assert "3.5 s" in draft.message


def test_a_failure_carries_its_code_and_reason() -> None:
    reason = FailedReason("ModelArts.6361", "The notebook server exited.", {"cause": "exited"})
    draft = events.for_transition(
        _instance(1, S.STARTING), _instance(1, S.START_FAILED).evolve(failed=reason),
        actor="engine", now_ms=1,
    )
    assert draft is not None
    assert draft.code == "ModelArts.6361"
    assert "exited" in draft.message
    assert draft.detail == {"cause": "exited"}


def test_messages_name_the_actor() -> None:
    stop = events.for_transition(
        _instance(1, S.RUNNING), _instance(1, S.STOPPING), actor=events.AUTO_STOP, now_ms=1
    )
    assert stop is not None and "auto-stop policy" in stop.message
    deleted = events.for_transition(
        _instance(1, S.STOPPED), _instance(1, S.DELETED), actor=events.user("alice"), now_ms=1
    )
    assert deleted is not None and deleted.message == "Deleted by user alice."
    assert events.queued("user:alice", 3).detail == {"rank": 3}


# --- store -----------------------------------------------------------------------------


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[tuple[str, AsyncEngine]]:
    async with server.migrated_database(tmp_path) as built:
        yield built


@dataclass
class Stores:
    instances: InstanceRepository
    events: EventRepository

    def service(self, **options: Any) -> EventService:
        return EventService(repository=self.events, instances=self.instances,
                            clock=FakeClock(), **{"retention_seconds": 60, **options})


@pytest.fixture
def stores(database: tuple[str, AsyncEngine]) -> Stores:
    sessions = make_sessionmaker(database[1])
    return Stores(InstanceRepository(sessions, CATALOG), EventRepository(sessions))


async def test_status_writes_append_their_events_in_order(
    stores: Stores,
) -> None:
    repo, log = stores.instances, stores.events
    woken: list[int] = []
    repo.on_event(lambda: woken.append(1))
    alice = events.user("alice")
    created = await repo.add(_instance(1), project_quota=10, flavor_quota=None, actor=alice)
    running = await repo.transition(created, S.RUNNING, now_ms=3000)
    stopping = await repo.transition(running, S.STOPPING, now_ms=4000, actor=alice)
    await repo.transition(stopping, S.STOPPED, now_ms=5000)
    total, found = await log.page(EventFilter("p", instance_id="DE-1"), limit=10)
    assert total == 4
    assert [(e.kind, e.actor) for e in found] == [
        (EventKind.CREATED, alice),
        (EventKind.READY, "engine"),
        (EventKind.STOP_REQUESTED, alice),
        # Stopped on the word of whoever asked, though the engine wrote it.
        (EventKind.STOPPED, alice),
    ]
    assert [e.at_ms for e in found] == [1000, 3000, 4000, 5000]
    assert found == sorted(found, key=lambda e: e.id)
    assert len(woken) == 4


async def test_a_write_that_loses_leaves_no_event(stores: Stores) -> None:
    repo, log = stores.instances, stores.events
    created = await repo.add(_instance(1), project_quota=10, flavor_quota=None)
    await repo.transition(created, S.RUNNING, now_ms=2000)
    with pytest.raises(Exception, match="changed meanwhile"):
        await repo.transition(created, S.CREATE_FAILED, now_ms=2000)
    total, _ = await log.page(EventFilter("p"), limit=10)
    assert total == 2


async def test_the_failure_names_its_event(stores: Stores) -> None:
    repo, log = stores.instances, stores.events
    created = await repo.add(_instance(1), project_quota=10, flavor_quota=None)
    reason = FailedReason("ModelArts.6361", "gone", {"cause": "exited"})
    failed = await repo.transition(created, S.CREATE_FAILED, now_ms=2000, failed=reason)
    _, found = await log.page(EventFilter("p"), limit=10, after=0)
    assert found[-1].kind is EventKind.FAILED
    stored = await repo.load("DE-1")
    assert stored is not None and stored.failed is not None
    assert stored.failed.detail == {"cause": "exited", "event_id": str(found[-1].id)}
    assert failed.failed == stored.failed


async def test_a_queued_create_says_its_rank(stores: Stores) -> None:
    repo, log = stores.instances, stores.events
    for n in (1, 2):
        await repo.add(_instance(n, S.CREATE_QUEUING, at=n * 1000), project_quota=10,
                       flavor_quota=None)
    _, found = await log.page(EventFilter("p", instance_id="DE-2"), limit=10)
    assert [e.kind for e in found] == [EventKind.CREATED, EventKind.QUEUED]
    assert found[1].detail == {"rank": 2}


async def test_pages_scopes_and_purge(stores: Stores) -> None:
    repo, log = stores.instances, stores.events
    for n in range(5):
        await repo.add(_instance(n, at=1000 + n), project_quota=10, flavor_quota=None)
    await repo.add(_instance(9, project="other", at=2000), project_quota=10, flavor_quota=None)
    total, page = await log.page(EventFilter("p"), limit=2, offset=1)
    assert total == 5
    assert [e.instance_id for e in page] == ["DE-1", "DE-2"]
    total, page = await log.page(EventFilter("p"), limit=10, after=page[0].id)
    assert [e.instance_id for e in page] == ["DE-2", "DE-3", "DE-4"]
    assert total == 3
    assert (await log.page(EventFilter("p", user_id="someone else"), limit=10))[0] == 0
    assert await log.latest_id(EventFilter("other")) > await log.latest_id(EventFilter("p"))
    assert await log.purge(before_ms=1003) == 3
    assert [e.instance_id for e in (await log.page(EventFilter("p"), limit=10))[1]] == [
        "DE-3", "DE-4"
    ]


async def test_health_lost_and_regained_and_an_auto_stop(
    stores: Stores,
) -> None:
    repo, log = stores.instances, stores.events
    created = await repo.add(_instance(1), project_quota=10, flavor_quota=None)
    running = await repo.transition(created, S.RUNNING, now_ms=2000)
    fault = FailedReason("ModelArts.6361", "stopped answering", {"cause": "unresponsive"})
    lost = await repo.transition(running, S.UNAVAILABLE, now_ms=3000, failed=fault)
    back = await repo.transition(lost, S.RUNNING, now_ms=4000, failed=None)
    stopping = await repo.transition(back, S.STOPPING, now_ms=5000, actor=events.AUTO_STOP)
    await repo.transition(stopping, S.STOPPED, now_ms=6000)
    _, found = await log.page(EventFilter("p"), limit=10)
    assert [(e.kind, e.actor) for e in found[2:]] == [
        (EventKind.HEALTH_LOST, "engine"),
        (EventKind.HEALTH_REGAINED, "engine"),
        (EventKind.STOP_REQUESTED, events.AUTO_STOP),
        (EventKind.STOPPED, events.AUTO_STOP),
    ]
    assert found[2].code == "ModelArts.6361"
    assert lost.failed is not None
    assert lost.failed.detail["event_id"] == str(found[2].id)
    assert found[-1].detail == {"reason": "auto-stop: the run reached its time"}


async def test_an_adoption_is_recorded_without_a_write(
    stores: Stores,
) -> None:
    repo, log = stores.instances, stores.events
    created = await repo.add(_instance(1), project_quota=10, flavor_quota=None)
    await repo.record(created, events.adopted(), now_ms=5000)
    _, found = await log.page(EventFilter("p"), limit=10)
    assert [e.kind for e in found] == [EventKind.CREATED, EventKind.ADOPTED]
    stored = await repo.load("DE-1")
    assert stored is not None and stored.version == created.version


async def test_a_reader_after_the_last_id_misses_nothing_of_concurrent_writes(
    stores: Stores,
) -> None:
    """What a stream does: read after the last id seen, again and again, while others
    write; every event must be seen, though ids are handed out before commit."""
    repo, log = stores.instances, stores.events
    seen: list[int] = []
    done = asyncio.Event()

    async def read() -> None:
        after = 0
        while True:
            finished = done.is_set()
            _, found = await log.page(EventFilter("p"), limit=1000, after=after)
            seen.extend(e.id for e in found)
            after = found[-1].id if found else after
            if finished:
                return
            await asyncio.sleep(0)

    async def write(n: int) -> None:
        created = await repo.add(_instance(n), project_quota=100, flavor_quota=None)
        await repo.transition(created, S.RUNNING, now_ms=2000)

    reader = asyncio.create_task(read())
    await asyncio.gather(*(write(n) for n in range(30)))
    done.set()
    await reader
    _, everything = await log.page(EventFilter("p"), limit=1000)
    assert len(everything) == 60
    assert seen == [e.id for e in everything]


# --- streams ---------------------------------------------------------------------------


async def test_a_stream_wakes_on_a_write_beats_when_idle_and_ends_on_shutdown(
    stores: Stores,
) -> None:
    repo = stores.instances
    service = stores.service(poll_seconds=30, heartbeat_seconds=0.2)
    created = await repo.add(_instance(1), project_quota=10, flavor_quota=None)
    admin = Principal("u" * 32, "u", "p", Role.ADMIN)
    stream = await service.open_stream(principal=admin, params={}, last_event_id=None)
    assert (await anext(stream)).startswith("retry: 1000\n")
    # Only what comes next: the create before the stream opened is not sent again.
    pending = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0.05)
    assert not pending.done()
    # The poll is 30 s away: only the writer's wake-up can deliver this in time.
    await repo.transition(created, S.RUNNING, now_ms=2000)
    frame = await asyncio.wait_for(pending, 1)
    event_id, data = frame.splitlines()[:2]
    assert json.loads(data.removeprefix("data: "))["kind"] == "ready"
    assert event_id == f"id: {json.loads(data.removeprefix('data: '))['id']}"
    assert await asyncio.wait_for(anext(stream), 1) == ": keep-alive\n\n"
    service.closing = True
    service.hub.publish()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(stream), 1)


async def test_a_stream_resumes_and_a_member_sees_only_their_own(
    stores: Stores,
) -> None:
    repo = stores.instances
    service = stores.service()
    await repo.add(_instance(1), project_quota=10, flavor_quota=None)
    other = _instance(2)
    await repo.add(other.evolve(user_id=UserId("v" * 32)), project_quota=10, flavor_quota=None)
    member = Principal("u" * 32, "u", "p", Role.MEMBER)
    stream = await service.open_stream(principal=member, params={}, last_event_id="0")
    await anext(stream)
    frame = await asyncio.wait_for(anext(stream), 1)
    assert json.loads(frame.splitlines()[1].removeprefix("data: "))["instance_id"] == "DE-1"
    page = await service.page(principal=member, params={})
    assert [e["instance_id"] for e in page["events"]] == ["DE-1"]
    with pytest.raises(errors.InstanceNotFound):
        await service.page(principal=member, params={}, instance_id="DE-2")
    for bad in ({"limit": "0"}, {"offset": "-1"}, {"after": "x"}):
        with pytest.raises(errors.InvalidValue):
            await service.page(principal=member, params=bad)


async def test_streams_share_one_read_per_commit_and_each_gets_its_scope(
    stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = stores.instances
    events_repo = stores.events
    service = stores.service(poll_seconds=30)
    mine = await repo.add(_instance(1), project_quota=10, flavor_quota=None)
    theirs = await repo.add(_instance(2, project="q"), project_quota=10, flavor_quota=None)
    admin = Principal("u" * 32, "u", "p", Role.ADMIN)
    streams = [await service.open_stream(principal=admin, params={}, last_event_id=None)
               for _ in range(20)]

    async def next_ids() -> list[list[str]]:
        frames = await asyncio.wait_for(asyncio.gather(*(anext(s) for s in streams)), 2)
        return [[json.loads(line.removeprefix("data: "))["instance_id"]
                 for line in frame.splitlines() if line.startswith("data: ")]
                for frame in frames]

    for stream in streams:
        await anext(stream)
    mine = await repo.transition(mine, S.RUNNING, now_ms=2000)
    assert await next_ids() == [["DE-1"]] * 20
    reads = 0
    tail = events_repo.tail

    async def counted(**kwargs: object) -> list[Event]:
        nonlocal reads
        reads += 1
        return await tail(**kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(events_repo, "tail", counted)
    await repo.transition(theirs, S.RUNNING, now_ms=2001)  # another project's: not sent
    await repo.transition(mine, S.STOPPING, now_ms=2002)
    assert await next_ids() == [["DE-1"]] * 20
    assert reads <= 2, "every stream read the store for itself"
    for stream in streams:
        await stream.aclose()
    await service.tail.close()


async def test_a_stream_that_falls_far_behind_is_cut_off_and_can_resume(
    stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_events, "TAIL_QUEUE", 2)
    repo = stores.instances
    service = stores.service(poll_seconds=0.05)
    admin = Principal("u" * 32, "u", "p", Role.ADMIN)
    stream = await service.open_stream(principal=admin, params={}, last_event_id=None)
    await anext(stream)
    for n in range(1, 6):  # five events while the client reads nothing
        await repo.add(_instance(n), project_quota=10, flavor_quota=None)
    await asyncio.sleep(0.3)
    received = [frame async for frame in stream]  # what was queued, then the end
    ids = [int(line.removeprefix("id: ")) for frame in received
           for line in frame.splitlines() if line.startswith("id: ")]
    assert len(ids) < 5
    resumed = await service.open_stream(
        principal=admin, params={}, last_event_id=str(ids[-1] if ids else 0)
    )
    await anext(resumed)
    later: list[int] = []
    while len(ids) + len(later) < 5:
        rest = await asyncio.wait_for(anext(resumed), 1)
        later += [int(line.removeprefix("id: ")) for line in rest.splitlines()
                  if line.startswith("id: ")]
    assert ids + later == list(range(ids[0], ids[0] + 5))  # none lost, none twice
    await resumed.aclose()
    await service.tail.close()
