"""Two engines on one store and one cluster-like backend (the fake backend's shared mode),
one of them late: what the chaos test (``tests/e2e/test_chaos.py``) found, replayed step
by step. A replica acts only on what it read and observed while holding the lease."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Literal

from demanager.backends.base import BackendContext
from demanager.backends.fake import FakeBackend, FakeHandle
from demanager.backends.fake_state import launches, workloads
from demanager.backends.options import FakeOptions
from demanager.domain.lifecycle import InstanceStatus
from demanager.domain.planning import Observation
from demanager.engine.clock import FakeClock
from tests.unit.test_replicas import PRINCIPAL, _body, _runtime

Hold = Literal["before", "after"]


class _LateBackend(FakeBackend):
    """Its observations can be late, as on a replica whose event loop is busy: the
    answer is held up (``after``: the workload is observed, then the answer waits) or
    the look itself (``before``), until the test lets it through."""

    def __init__(self, options: FakeOptions, context: BackendContext, *, hold: Hold) -> None:
        super().__init__(options, context)
        self.hold = hold
        self.release = asyncio.Event()
        self.waiting = asyncio.Event()

    async def observe(self, instance_id: str, handle: FakeHandle | None) -> Observation[FakeHandle]:
        if self.hold == "before":
            await self._wait()
        observed = await super().observe(instance_id, handle)
        if self.hold == "after":
            await self._wait()
        return observed

    async def _wait(self) -> None:
        self.waiting.set()
        await self.release.wait()


def _late(tmp_path: Path, hold: Hold) -> _LateBackend:
    return _LateBackend(FakeOptions(state_dir=tmp_path / "fake-state"),
                        BackendContext(data_dir=tmp_path), hold=hold)


async def test_a_plan_made_before_the_claim_is_not_acted_on(tmp_path: Path) -> None:
    state = tmp_path / "fake-state"
    late = _late(tmp_path, "after")
    async with (
        _runtime(tmp_path, clock=FakeClock(), fake={"state_dir": state}) as a,
        _runtime(tmp_path, clock=FakeClock(), backend=late) as b,
    ):
        # b records the create and begins to drive it: it sees no workload yet, and its
        # answer is held up.
        created = await b.service.create(principal=PRINCIPAL, body=_body("twice"))
        await asyncio.wait_for(late.waiting.wait(), 5)
        # Meanwhile a drives it all the way: launched, RUNNING, lease given back.
        await a.reconciler.settle()
        running = await a.instances.load(created.id)
        assert running is not None and running.status is InstanceStatus.RUNNING
        # b's late answer ("no workload") must not lead to a second launch.
        late.release.set()
        await b.reconciler.settle()
        await a.reconciler.settle()

        launched = [launch for launch in launches(state) if launch.instance_id == created.id]
        assert len(launched) == 1, launched
        after = await a.instances.load(created.id)
        assert after is not None and after.status is InstanceStatus.RUNNING
        assert created.id in workloads(state)


async def test_a_stale_status_does_not_stop_a_fresh_start(tmp_path: Path) -> None:
    state = tmp_path / "fake-state"
    late = _late(tmp_path, "before")
    clock = FakeClock()  # one for both, moved on between actions: each is a generation
    async with (
        _runtime(tmp_path, clock=clock, fake={"state_dir": state}) as a,
        _runtime(tmp_path, clock=clock, backend=late) as b,
    ):
        created = await a.service.create(principal=PRINCIPAL, body=_body("stopped"))
        await a.reconciler.settle()
        clock.advance(1)
        await a.service.act(principal=PRINCIPAL, instance_id=created.id,
                            body={"action": "stop"})
        await a.reconciler.settle()
        # b reads the instance STOPPED, and is held up before it looks at the workload.
        driving = asyncio.create_task(b.reconciler.drive(created.id))
        await asyncio.wait_for(late.waiting.wait(), 5)
        # Meanwhile the caller starts it again, and a brings it up and lets go.
        clock.advance(1)
        await a.service.act(principal=PRINCIPAL, instance_id=created.id,
                            body={"action": "start"})
        await a.reconciler.settle()
        started = workloads(state)[created.id]
        # b now sees a workload behind what it read as STOPPED: it must not stop it.
        late.release.set()
        await asyncio.wait_for(driving, 5)
        await b.reconciler.settle()
        await a.reconciler.settle()

        after = await a.instances.load(created.id)
        assert after is not None and after.status is InstanceStatus.RUNNING
        assert workloads(state).get(created.id) == started, "the started notebook was replaced"
        generations = [launch.generation for launch in launches(state)
                       if launch.instance_id == created.id]
        assert len(generations) == len(set(generations)) == 2, generations
