"""Reservations: a queue head's slot is reserved, used at once, or lapses to the next.

The planning rule is checked as a table with explicit instants; the engine is then
driven with a fake clock on a real SQLite store: a reservation used in time starts,
one left past ``reservation_seconds`` (or held by a frozen instance) goes back, and
the next in line gets the slot.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from demanager.backends.fake import FakeBackend
from demanager.domain.instance import Desired, Instance, Owner, ProjectId, UserId
from demanager.domain.lifecycle import InstanceStatus as S
from demanager.domain.planning import Observation, Step, Workload, plan
from demanager.engine.clock import FakeClock
from demanager.engine.runtime import Runtime, backend_context
from demanager.identity.principal import Principal, Role
from demanager.settings import Settings
from demanager.store.database import upgrade
from tests.unit.test_planning import NOW, instance

FREE = "modelarts.vm.cpu.free"
PROFILE = "Multi-Engine 1.0 (python3)-cpu"
CATALOG = f"""
profiles:
  - id: "{PROFILE}"
    flavor_type: CPU
flavors:
  - name: {FREE}
    type: CPU
    promo_type: Free
    params: {{CPU: 1, memory: 4GiB}}
    capacity: 1
"""
WINDOW_MS = 60_000
OWNER = Owner(UserId("0" * 32), "alice", ProjectId("p1"))
PRINCIPAL = Principal(OWNER.user_id, OWNER.user_name, OWNER.project_id, Role.MEMBER)


def _reserved(at: int | None, *, frozen: bool = False) -> Instance:
    return dataclasses.replace(instance(S.READY_TO_START), reserved_at=at, frozen=frozen)


@pytest.mark.parametrize(
    ("reserved", "step"),
    [
        (_reserved(NOW), Step.MARK_STARTING),
        (_reserved(NOW - WINDOW_MS + 1), Step.MARK_STARTING),
        (_reserved(NOW - WINDOW_MS), Step.LAPSE),
        (_reserved(NOW - 10 * WINDOW_MS), Step.LAPSE),
        (_reserved(NOW, frozen=True), Step.LAPSE),
        (_reserved(None), Step.MARK_STARTING),  # a row from before reservations
    ],
)
def test_a_reservation_is_used_at_once_or_lapses(reserved: Instance, step: Step) -> None:
    assert plan(reserved, Observation(Workload.ABSENT), NOW, reservation_ms=WINDOW_MS) is step


@pytest.mark.parametrize("status", [S.CREATE_QUEUING, S.START_QUEUING])
def test_a_frozen_instance_is_never_admitted(status: S) -> None:
    queued = instance(status)
    absent = Observation(Workload.ABSENT)
    assert plan(queued, absent, NOW, admissible=True) is Step.ADMIT
    frozen = dataclasses.replace(queued, frozen=True)
    assert plan(frozen, absent, NOW, admissible=True) is Step.NOTHING


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[tuple[Runtime, FakeClock]]:
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(CATALOG, encoding="utf-8")
    settings = Settings(data_dir=tmp_path, backend="fake", bootstrap_token="t",
                        catalog_file=catalog, reservation_seconds=WINDOW_MS / 1000)
    await asyncio.to_thread(upgrade, settings.sqlalchemy_url)
    clock = FakeClock()
    fake = FakeBackend(settings.fake, backend_context(settings))
    built = await Runtime.build(settings, clock=clock, backend=fake)
    yield built, clock
    await built.close()


def _body(name: str) -> dict[str, object]:
    return {"name": name, "profile_id": PROFILE, "flavor": FREE,
            "spec": {"storage": {"type": "evs"}}}


async def _status(rt: Runtime, instance_id: str) -> Instance:
    found = await rt.instances.load(instance_id)
    assert found is not None
    return found


async def _settled(rt: Runtime, rounds: int = 4) -> None:
    for _ in range(rounds):
        await rt.reconciler.settle()


async def _reserved_head(rt: Runtime, clock: FakeClock) -> tuple[Instance, Instance]:
    """A stopped instance put in READY_TO_START by hand (as an admission leaves it), and
    a create queued behind it."""
    head = await rt.service.create(principal=PRINCIPAL, body=_body("head"))
    await _settled(rt)
    await rt.service.act(principal=PRINCIPAL, instance_id=head.id, body={"action": "stop"})
    await _settled(rt)
    stopped = await _status(rt, head.id)
    assert stopped.status is S.STOPPED
    queued = await rt.instances.transition(
        stopped, S.START_QUEUING, now_ms=clock.now_ms(), desired=Desired.RUNNING
    )
    reserved = await rt.instances.transition(
        queued, S.READY_TO_START, now_ms=clock.now_ms(), reserved_at=clock.now_ms()
    )
    behind = await rt.service.create(principal=PRINCIPAL, body=_body("behind"))
    assert behind.status is S.CREATE_QUEUING
    return reserved, behind


async def test_a_reservation_used_in_time_starts_and_keeps_its_timestamp(
    runtime: tuple[Runtime, FakeClock],
) -> None:
    rt, clock = runtime
    head, behind = await _reserved_head(rt, clock)
    clock.advance(WINDOW_MS / 1000 / 2)
    await _settled(rt)
    running = await _status(rt, head.id)
    assert running.status is S.RUNNING and running.reserved_at == head.reserved_at
    assert (await _status(rt, behind.id)).status is S.CREATE_QUEUING


async def test_a_reservation_not_used_in_time_goes_to_the_next_in_line(
    runtime: tuple[Runtime, FakeClock],
) -> None:
    rt, clock = runtime
    head, behind = await _reserved_head(rt, clock)
    clock.advance(WINDOW_MS / 1000 + 1)
    await _settled(rt)
    lapsed = await _status(rt, head.id)
    assert lapsed.status is S.STOPPED and lapsed.desired == Desired.STOPPED
    assert lapsed.reserved_at is None
    admitted = await _status(rt, behind.id)
    assert admitted.status is S.RUNNING
    assert admitted.reserved_at is not None and admitted.reserved_at >= head.reserved_at  # type: ignore[operator]


async def test_a_frozen_head_is_passed_over_and_its_reservation_lapses(
    runtime: tuple[Runtime, FakeClock],
) -> None:
    rt, clock = runtime
    holder = await rt.service.create(principal=PRINCIPAL, body=_body("holder"))
    await _settled(rt)
    first = await rt.service.create(principal=PRINCIPAL, body=_body("first"))
    second = await rt.service.create(principal=PRINCIPAL, body=_body("second"))
    assert first.status is second.status is S.CREATE_QUEUING
    await rt.instances.save(await _status(rt, first.id), now_ms=clock.now_ms(), frozen=True)

    await rt.service.act(principal=PRINCIPAL, instance_id=holder.id, body={"action": "stop"})
    await _settled(rt)
    assert (await _status(rt, first.id)).status is S.CREATE_QUEUING
    assert (await _status(rt, second.id)).status is S.RUNNING

    # A reservation held by an instance frozen after its admission is given back at once.
    await rt.service.act(principal=PRINCIPAL, instance_id=second.id, body={"action": "stop"})
    await _settled(rt)
    stopped = await _status(rt, second.id)
    queued = await rt.instances.transition(stopped, S.START_QUEUING, now_ms=clock.now_ms())
    reserved = await rt.instances.transition(
        queued, S.READY_TO_START, now_ms=clock.now_ms(), reserved_at=clock.now_ms()
    )
    await rt.instances.save(reserved, now_ms=clock.now_ms(), frozen=True)
    await _settled(rt)
    assert (await _status(rt, second.id)).status is S.STOPPED
    assert await rt.instances.slots_used(None, FREE) == 0
