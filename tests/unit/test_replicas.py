"""The engine under load and with several replicas on one store: waits that free their
worker, lease fencing, and nodes (issue defects 1, 8 and 9)."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

from demanager import errors
from demanager.backends import node
from demanager.backends.fake import FakeBackend
from demanager.domain.instance import Owner, ProjectId, UserId
from demanager.domain.lifecycle import InstanceStatus
from demanager.domain.planning import Step
from demanager.engine.clock import Clock, FakeClock, SystemClock
from demanager.engine.runtime import Runtime, backend_context
from demanager.engine.steps import NODE_KEY
from demanager.identity.principal import Principal, Role
from demanager.settings import Settings
from demanager.store.database import upgrade
from tests.conftest import MINIMAL_BODY

OWNER = Owner(UserId("0" * 32), "alice", ProjectId("p1"))
PRINCIPAL = Principal(OWNER.user_id, OWNER.user_name, OWNER.project_id, Role.MEMBER)


def _body(name: str) -> dict[str, object]:
    return {**MINIMAL_BODY, "name": name}


@contextlib.asynccontextmanager
async def _runtime(
    data_dir: Path,
    *,
    clock: Clock,
    backend: FakeBackend | None = None,
    **settings: object,
) -> AsyncIterator[Runtime]:
    config = Settings(
        **{"data_dir": data_dir, "backend": "fake", "bootstrap_token": "t",
           "instance_quota": 500, **settings}
    )
    await asyncio.to_thread(upgrade, config.sqlalchemy_url)
    backend = backend or FakeBackend(config.fake, backend_context(config))
    rt = await Runtime.build(config, clock=clock, backend=backend)
    try:
        yield rt
    finally:
        await rt.close()


async def _status(rt: Runtime, instance_id: str) -> InstanceStatus | None:
    instance = await rt.instances.load(instance_id)
    return None if instance is None else instance.status


async def _until(rt: Runtime, instance_id: str, status: InstanceStatus, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await _status(rt, instance_id) is status:
            return True
        await asyncio.sleep(0.02)
    return False


def test_every_step_has_a_handler(tmp_path: Path) -> None:
    async def check() -> None:
        async with _runtime(tmp_path, clock=FakeClock()) as rt:
            assert set(rt.reconciler._steps.table) == set(Step)

    asyncio.run(check())


async def test_defect_01_a_stop_is_not_starved_by_booting_instances(tmp_path: Path) -> None:
    # Eight workers and 50 instances that take a minute to boot: the stop of one more
    # instance must not wait for any of them (it used to wait for a worker to be free).
    async with _runtime(tmp_path, clock=SystemClock(), workers=8) as rt:
        target = await rt.service.create(principal=PRINCIPAL, body=_body("target"))
        assert await _until(rt, target.id, InstanceStatus.RUNNING, 5)
        rt.backend._delay = 60  # type: ignore[attr-defined]  # the others boot for a minute
        for n in range(50):
            await rt.service.create(principal=PRINCIPAL, body=_body(f"boot-{n}"))
        await asyncio.sleep(0.5)  # every drive is now in its waiting rhythm
        await rt.service.act(principal=PRINCIPAL, instance_id=target.id, body={"action": "stop"})
        assert await _until(rt, target.id, InstanceStatus.STOPPED, 10), (
            "the stop waited behind booting instances"
        )
        booting = [i for i in await rt.instances.needing_attention() if i.id != target.id]
        assert len(booting) == 50
        assert all(i.status is InstanceStatus.CREATING for i in booting), "none has booted"


async def test_defect_08_a_replica_that_lost_its_lease_cannot_write(tmp_path: Path) -> None:
    clock = FakeClock()
    async with _runtime(tmp_path, clock=clock) as rt:
        created = await rt.service.create(principal=PRINCIPAL, body=_body("fenced"))
        await rt.reconciler.settle()
        instance = await rt.instances.load(created.id)
        assert instance is not None
        leases = rt.reconciler._leases
        now = clock.now_ms()
        assert await leases.claim(instance.id, "replica-a", now_ms=now, ttl_ms=1_000)
        # replica-a stalls past its lease; replica-b takes the instance over.
        assert await leases.claim(instance.id, "replica-b", now_ms=now + 2_000, ttl_ms=1_000)
        try:
            await rt.instances.save(instance, now_ms=now + 2_100, fence="replica-a",
                                    description="late write")
            raise AssertionError("a fenced-out write went through")
        except errors.LeaseLost:
            pass
        unchanged = await rt.instances.load(instance.id)
        assert unchanged is not None and unchanged.version == instance.version
        assert unchanged.description == instance.description
        # The holder writes; a stale copy still loses as before.
        saved = await rt.instances.save(instance, now_ms=now + 2_200, fence="replica-b",
                                        description="holder")
        assert saved.description == "holder"
        try:
            await rt.instances.save(instance, now_ms=now + 2_300, fence="replica-b")
            raise AssertionError("a stale copy was written")
        except errors.ConcurrentUpdate:
            pass


class _SlowStopBackend(FakeBackend):
    """Stopping takes longer than the lease lasts."""

    stop_seconds = 1.5

    async def stop(self, instance_id, handle):  # type: ignore[no-untyped-def]
        if instance_id in self._store:
            await asyncio.sleep(self.stop_seconds)
        await super().stop(instance_id, handle)


async def test_defect_08_a_long_step_keeps_its_lease(tmp_path: Path) -> None:
    clock = SystemClock()
    config = Settings(data_dir=tmp_path, backend="fake", bootstrap_token="t")
    async with _runtime(
        tmp_path, clock=clock, backend=_SlowStopBackend(config.fake, backend_context(config)),
        lease_seconds=0.3,
        reconcile_interval_seconds=0.1,
    ) as rt:
        created = await rt.service.create(principal=PRINCIPAL, body=_body("slow"))
        assert await _until(rt, created.id, InstanceStatus.RUNNING, 5)
        await rt.service.act(principal=PRINCIPAL, instance_id=created.id, body={"action": "stop"})
        await asyncio.sleep(0.1)  # the engine claims it and begins to stop it
        leases = rt.reconciler._leases
        stolen = []
        deadline = time.monotonic() + 1.2  # well past the 0.3 s lease, inside the stop
        while time.monotonic() < deadline:
            stolen.append(
                await leases.claim(created.id, "intruder", now_ms=clock.now_ms(), ttl_ms=300)
            )
            await asyncio.sleep(0.05)
        assert not any(stolen), "the lease ran out while its holder was still stopping"
        assert await _until(rt, created.id, InstanceStatus.STOPPED, 5)


async def test_defect_09_the_handle_names_the_node(tmp_path: Path) -> None:
    async with _runtime(tmp_path, clock=FakeClock()) as rt:
        created = await rt.service.create(principal=PRINCIPAL, body=_body("noded"))
        await rt.reconciler.settle()
        running = await rt.instances.load(created.id)
        assert running is not None and running.status is InstanceStatus.RUNNING
        assert running.handle is not None and running.handle[NODE_KEY] == rt.backend.node


async def test_defect_09_a_live_node_keeps_its_workloads(tmp_path: Path) -> None:
    """Two replicas, each seeing only its own workloads (two hosts). The other replica
    sees nothing for the instance; it must not relaunch it while its node lives, and
    takes it over once that node is silent past the lease."""
    clock_a, clock_b = FakeClock(), FakeClock()
    async with (
        _runtime(tmp_path, clock=clock_a) as a,
        _runtime(tmp_path, clock=clock_b) as b,
    ):
        assert a.backend.node != b.backend.node
        created = await a.service.create(principal=PRINCIPAL, body=_body("hosted"))
        await a.reconciler.settle()
        await b.reconciler.settle()
        kept = await b.instances.load(created.id)
        assert kept is not None and kept.status is InstanceStatus.RUNNING
        assert kept.handle is not None and kept.handle[NODE_KEY] == a.backend.node
        assert created.id not in b.backend._store  # type: ignore[attr-defined]
        assert created.id in a.backend._store  # type: ignore[attr-defined]
        # Node a goes silent (its replica died): after the lease, b takes over.
        clock_b.advance(60)
        await b.reconciler.settle()
        moved = await b.instances.load(created.id)
        assert moved is not None and moved.status is InstanceStatus.RUNNING
        assert moved.handle is not None and moved.handle[NODE_KEY] == b.backend.node


def test_defect_09_neighbours_are_judged_by_node_and_process_not_host_name() -> None:
    here = node.this_node()
    live = node.replica_name(here, "abcd")
    assert not node.is_dead_neighbour(live, here), "this very process"
    # Same host name, another PID namespace or boot: another node; its PIDs mean nothing.
    host = here.rsplit("-", 1)[0]
    twin = f"{host}-000000000000:999999:1:abcd"
    assert not node.is_dead_neighbour(twin, here)
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        ticks = node.start_ticks(sleeper.pid)
        assert not node.is_dead_neighbour(f"{here}:{sleeper.pid}:{ticks}:abcd", here)
        # The same PID, started at another tick: reused by another process.
        assert node.is_dead_neighbour(f"{here}:{sleeper.pid}:{(ticks or 0) + 1}:abcd", here)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert node.is_dead_neighbour(f"{here}:{sleeper.pid}:{ticks}:abcd", here), "gone"
    assert not node.is_dead_neighbour("not-a-replica-name", here)


def _sized(owner: object) -> dict[str, int]:
    """Sizes of the containers among ``owner``'s attributes."""
    sizes = {}
    for name, value in vars(owner).items():
        if isinstance(value, dict | set | list):
            sizes[name] = len(value)
    return sizes


async def test_defect_07_no_state_per_project_or_instance_outlives_its_work(
    tmp_path: Path,
) -> None:
    # Per-project locks used to be kept forever; the engine's per-instance memory (leases
    # held, launch counts, backoffs, the sweep's copies) must go when an instance rests.
    async with _runtime(tmp_path, clock=FakeClock()) as rt:
        projects = [f"project-{n}" for n in range(120)]
        for project in projects:
            principal = Principal(OWNER.user_id, OWNER.user_name, ProjectId(project),
                                  Role.MEMBER)
            await rt.service.create(principal=principal, body=_body("one"))
        await rt.reconciler.settle()
        await rt.reconciler.settle()  # a sweep of instances at rest keeps nothing either
        for part in (rt.service, rt.views, rt.reconciler):
            grown = {k: n for k, n in _sized(part).items() if n >= len(projects)}
            assert grown == {}, f"{type(part).__name__} keeps {grown}"
        engine = rt.reconciler
        assert (engine._held, dict(engine._launches), engine._backoffs) == ({}, {}, {})
        assert engine._snapshots == {}
        assert engine.queue_depth() == 0


async def test_replicas_split_the_sweep_between_them(tmp_path: Path) -> None:
    """On a backend every replica reaches, each instance is looked at by exactly one live
    replica's sweep; when one replica falls silent, the other looks at everything."""
    state = tmp_path / "cluster"
    clock_a, clock_b = FakeClock(), FakeClock()
    async with (
        _runtime(tmp_path, clock=clock_a, fake={"state_dir": state}) as a,
        _runtime(tmp_path, clock=clock_b, fake={"state_dir": state}) as b,
    ):
        assert a.backend.node is None and b.backend.node is None
        for n in range(40):
            await a.service.create(principal=PRINCIPAL, body=_body(f"split-{n}"))
        await a.reconciler.settle()
        await b.reconciler.settle()
        await a.reconciler.settle()  # both now know of each other
        instances = await a.instances.needing_attention()
        assert len(instances) == 40
        mine_a = {i.id for i in instances if a.reconciler._my_share(i)}
        mine_b = {i.id for i in instances if b.reconciler._my_share(i)}
        assert mine_a.isdisjoint(mine_b) and len(mine_a | mine_b) == 40
        assert mine_a and mine_b, "both take a share"
        clock_b.advance(60)  # a falls silent
        await b.reconciler.settle()
        assert all(b.reconciler._my_share(i) for i in instances)


def test_a_sweep_slower_than_half_a_lease_is_refused(tmp_path: Path) -> None:
    # Heartbeats ride on the sweep: replicas would take each other for dead.
    import pydantic
    import pytest

    with pytest.raises(pydantic.ValidationError, match="at most half of lease_seconds"):
        Settings(data_dir=tmp_path, reconcile_interval_seconds=10, lease_seconds=15)
    assert Settings(data_dir=tmp_path, reconcile_interval_seconds=7.5, lease_seconds=15)
