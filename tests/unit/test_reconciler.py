"""The reconciler with an injected clock: auto-stop and failures in milliseconds."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from demanager.backends.base import BackendContext
from demanager.backends.fake import FakeBackend
from demanager.backends.options import FakeOptions
from demanager.domain.instance import Location, Owner, ProjectId, Storage, UserId
from demanager.domain.lifecycle import InstanceStatus
from demanager.engine.clock import FakeClock
from demanager.engine.runtime import Runtime, backend_context
from demanager.identity.principal import Principal, Role
from demanager.settings import Settings
from demanager.store.database import upgrade

OWNER = Owner(UserId("0" * 32), "alice", ProjectId("p1"))
PRINCIPAL = Principal(OWNER.user_id, OWNER.user_name, OWNER.project_id, Role.MEMBER)


def _body(name: str, **spec: object) -> dict[str, object]:
    return {
        "name": name,
        "profile_id": "Multi-Engine 1.0 (python3)-cpu",
        "flavor": "modelarts.vm.cpu.2u",
        "spec": {"storage": {"type": "evs"}, **spec},
    }


@contextlib.asynccontextmanager
async def _engine(
    tmp_path: Path, backend_type: type[FakeBackend]
) -> AsyncIterator[tuple[Runtime, Any]]:
    """A runtime on a fresh SQLite store with a fake clock and the given backend."""
    settings = Settings(data_dir=tmp_path, backend="fake", bootstrap_token="t")
    await asyncio.to_thread(upgrade, settings.sqlalchemy_url)
    backend = backend_type(settings.fake, backend_context(settings))
    rt = await Runtime.build(settings, clock=FakeClock(), backend=backend)
    try:
        yield rt, backend
    finally:
        await rt.close()


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[tuple[Runtime, FakeClock]]:
    settings = Settings(data_dir=tmp_path, backend="fake", bootstrap_token="t")
    await asyncio.to_thread(upgrade, settings.sqlalchemy_url)
    clock = FakeClock()
    fake = FakeBackend(settings.fake, backend_context(settings))
    built = await Runtime.build(settings, clock=clock, backend=fake)
    yield built, clock
    await built.close()


async def test_auto_stop_fires_at_stop_timestamp(runtime: tuple[Runtime, FakeClock]) -> None:
    rt, clock = runtime
    created = await rt.service.create(
        principal=PRINCIPAL, body=_body("a", auto_stop={"enable": True, "duration": 3600})
    )
    await rt.reconciler.settle()
    running = await rt.instances.load(created.id)
    assert running is not None and running.status is InstanceStatus.RUNNING
    assert running.stop_at == running.running_since + 3600 * 1000  # type: ignore[operator]

    clock.advance(3599)
    await rt.reconciler.settle()
    still = await rt.instances.load(created.id)
    assert still is not None and still.status is InstanceStatus.RUNNING
    assert still.remain_time(clock.now_ms()) is not None

    clock.advance(2)
    await rt.reconciler.settle()
    stopped = await rt.instances.load(created.id)
    assert stopped is not None and stopped.status is InstanceStatus.STOPPED
    assert stopped.stop_at is None and stopped.desired == "STOPPED"


async def test_without_auto_stop_nothing_happens(runtime: tuple[Runtime, FakeClock]) -> None:
    rt, clock = runtime
    created = await rt.service.create(principal=PRINCIPAL, body=_body("b"))
    await rt.reconciler.settle()
    clock.advance(86400 * 3)
    await rt.reconciler.settle()
    instance = await rt.instances.load(created.id)
    assert instance is not None and instance.status is InstanceStatus.RUNNING


async def test_failed_start_records_reason(runtime: tuple[Runtime, FakeClock]) -> None:
    rt, clock = runtime
    # A profile that left the catalog cannot launch: the create fails with a reason. The
    # row is stored as the API would have left it, with no engine told of it yet (a
    # notified engine could launch it before the profile changes).
    created = dataclasses.replace(
        _instance_with(Storage("evs", Location(path="/home/ma-user/work", volume_size=5))),
        profile_id="fail me", flavor="modelarts.vm.cpu.2u", status=InstanceStatus.CREATING,
        created_at=clock.now_ms(), updated_at=clock.now_ms(),
    )
    await rt.instances.add(created, project_quota=10, flavor_quota=None)
    await rt.reconciler.settle()
    failed = await rt.instances.load(created.id)
    assert failed is not None and failed.status is InstanceStatus.CREATE_FAILED
    assert failed.failed is not None and failed.failed.code == "ModelArts.6361"


def test_volume_over_its_size_is_reported_not_refused() -> None:
    from demanager.domain.instance import Location, Storage
    from demanager.engine.run_terms import GB, volume_overuse

    base = _instance_with(Storage("evs", Location(path="/home/ma-user/work", volume_size=5)))
    assert volume_overuse(base, 5 * GB) is None
    warning = volume_overuse(base, 6 * GB)
    assert warning is not None and warning.code == "ModelArts.6528"
    assert warning.detail["volume_size_gb"] == "5"
    obs = _instance_with(Storage("obs", Location(path="/bucket/dir/")))
    assert volume_overuse(obs, 100 * GB) is None


def _instance_with(storage: object) -> object:
    from demanager.domain.instance import AutoStop, Instance, InstanceId

    return Instance(
        id=InstanceId("DE-x"), project_id=OWNER.project_id, name="x", description="",
        profile_id="p", flavor="f", storage=storage, extend_storage=None,  # type: ignore[arg-type]
        auto_stop=AutoStop(), annotations={}, workspace_id="0", pool_id=None,
        ai_project_id="default-ai-project", user_id=OWNER.user_id, user_name="alice",
        status=InstanceStatus.RUNNING, desired="RUNNING", created_at=0, updated_at=0,
    )


class _OomBackend(FakeBackend):
    """Reports, once ``kills`` is set, that a process of each workload was OOM-killed."""

    kills = 0

    async def observe(self, instance_id, handle):  # type: ignore[no-untyped-def]
        from demanager.backends.process import oom_warning

        seen = await super().observe(instance_id, handle)
        if not self.kills:
            return seen
        return dataclasses.replace(seen, warning=oom_warning(self.kills, 1024**3))


async def test_an_oom_kill_shows_in_failed_reasons_while_it_runs(tmp_path: Path) -> None:
    async with _engine(tmp_path, _OomBackend) as (rt, backend):
        created = await rt.service.create(principal=PRINCIPAL, body=_body("oom"))
        await rt.reconciler.settle()
        running = await rt.instances.load(created.id)
        assert running is not None and running.status is InstanceStatus.RUNNING
        assert running.failed is None
        backend.kills = 1
        await rt.reconciler.sweep()
        await rt.reconciler.settle()
        warned = await rt.instances.load(created.id)
        assert warned is not None and warned.status is InstanceStatus.RUNNING
        assert warned.failed is not None and warned.failed.detail["cause"] == "oom_killed"
        assert "1 GiB" in warned.failed.message
        # The same warning again writes nothing; a new kill updates the count.
        await rt.reconciler.sweep()
        await rt.reconciler.settle()
        again = await rt.instances.load(created.id)
        assert again is not None and again.version == warned.version
        backend.kills = 2
        await rt.reconciler.sweep()
        await rt.reconciler.settle()
        twice = await rt.instances.load(created.id)
        assert twice is not None and twice.failed is not None
        assert twice.failed.detail["oom_kills"] == "2"
        assert twice.status is InstanceStatus.RUNNING


class _ExitingBackend(FakeBackend):
    """Every launched workload exits at once, like a server that cannot bind its port."""

    launches = 0

    async def start(self, spec):  # type: ignore[no-untyped-def]
        type(self).launches += 1
        return await super().start(spec)

    async def observe(self, instance_id, handle):  # type: ignore[no-untyped-def]
        from demanager.domain.planning import Observation, Workload

        return Observation(Workload.ABSENT)


async def test_a_workload_that_keeps_exiting_fails_after_a_retry(tmp_path: Path) -> None:
    async with _engine(tmp_path, _ExitingBackend) as (rt, _backend):
        created = await rt.service.create(principal=PRINCIPAL, body=_body("exits"))
        await rt.reconciler.settle()
        failed = await rt.instances.load(created.id)
        assert failed is not None and failed.status is InstanceStatus.CREATE_FAILED
        assert failed.failed is not None and "exited" in failed.failed.message
        assert _ExitingBackend.launches == 2


async def test_defect_06_stopped_after_unavailable_has_no_failed_reasons(
    runtime: tuple[Runtime, FakeClock],
) -> None:
    # §3.9: failed_reasons is null unless the instance failed; STOPPED is not a failure.
    from demanager.domain.instance import FailedReason

    rt, clock = runtime
    created = await rt.service.create(principal=PRINCIPAL, body=_body("unavail"))
    await rt.reconciler.settle()
    running = await rt.instances.load(created.id)
    assert running is not None and running.status is InstanceStatus.RUNNING
    # Faulted and not yet restored (the engine would relaunch it on its next pass).
    await rt.instances.transition(
        running, InstanceStatus.UNAVAILABLE, now_ms=clock.now_ms(),
        failed=FailedReason("ModelArts.6361", "gone"),
    )
    await rt.service.act(principal=PRINCIPAL, instance_id=created.id, body={"action": "stop"})
    await rt.reconciler.settle()
    stopped = await rt.instances.load(created.id)
    assert stopped is not None and stopped.status is InstanceStatus.STOPPED
    assert stopped.failed is None


class _GatedBackend(FakeBackend):
    """Observes only the workload its handle names (as the process backend does when the
    row holds an older handle), and can hold a launch until the test releases it."""

    def __init__(self, options: FakeOptions, context: BackendContext) -> None:
        super().__init__(options, context)
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()

    async def start(self, spec):  # type: ignore[no-untyped-def]
        if self.gate is not None:
            self.entered.set()
            await self.gate.wait()
        return await super().start(spec)

    async def observe(self, instance_id, handle):  # type: ignore[no-untyped-def]
        from demanager.domain.planning import Observation, Workload

        workload = self._store.get(instance_id)
        if handle is None or workload is None or workload.token != handle.token:
            return Observation(Workload.ABSENT)
        return await super().observe(instance_id, handle)


async def test_defect_12_a_stop_during_a_relaunch_leaves_no_workload(tmp_path: Path) -> None:
    async with _engine(tmp_path, _GatedBackend) as (rt, backend):
        created = await rt.service.create(principal=PRINCIPAL, body=_body("orphan"))
        await rt.reconciler.settle()
        # The workload dies; the engine marks the instance UNAVAILABLE and relaunches it,
        # and a stop is accepted while the new workload boots.
        await backend.stop(created.id, None)
        backend.gate = asyncio.Event()
        settling = asyncio.create_task(rt.reconciler.settle())
        await asyncio.wait_for(backend.entered.wait(), 5)
        unavailable = await rt.instances.load(created.id)
        assert unavailable is not None and unavailable.status is InstanceStatus.UNAVAILABLE
        await rt.service.act(principal=PRINCIPAL, instance_id=created.id,
                             body={"action": "stop"})
        backend.gate.set()
        await asyncio.wait_for(settling, 5)
        await rt.reconciler.settle()
        stopped = await rt.instances.load(created.id)
        assert stopped is not None and stopped.status is InstanceStatus.STOPPED
        assert created.id not in backend._store  # nothing runs behind STOPPED


class _FreezableBackend(FakeBackend):
    """A frozen workload is alive but does not answer: observe says BOOTING, as the
    process backend does for a Jupyter stopped with SIGSTOP."""

    def __init__(self, options: FakeOptions, context: BackendContext) -> None:
        super().__init__(options, context)
        self.frozen: set[str] = set()
        self.launches = 0

    async def start(self, spec):  # type: ignore[no-untyped-def]
        self.launches += 1
        return await super().start(spec)

    async def observe(self, instance_id, handle):  # type: ignore[no-untyped-def]
        from demanager.domain.planning import Observation, Workload

        observed = await super().observe(instance_id, handle)
        if instance_id in self.frozen and observed.workload is Workload.READY:
            return Observation(Workload.BOOTING, observed.launched_at)
        return observed


async def test_defect_02_a_hung_notebook_turns_unavailable_and_back(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, backend="fake", bootstrap_token="t",
                        health_failures=3)
    await asyncio.to_thread(upgrade, settings.sqlalchemy_url)
    clock = FakeClock()
    backend = _FreezableBackend(settings.fake, backend_context(settings))
    rt = await Runtime.build(settings, clock=clock, backend=backend)
    created = await rt.service.create(principal=PRINCIPAL, body=_body("hung"))
    await rt.reconciler.settle()
    backend.frozen.add(created.id)
    for _ in range(2):
        clock.advance(2)
        await rt.reconciler.settle()
        still = await rt.instances.load(created.id)
        assert still is not None and still.status is InstanceStatus.RUNNING

    # The engine restarts between two probes: the count lives in the row, not in memory.
    workload = backend._store.get(created.id)
    assert workload is not None
    await rt.reconciler.stop()
    await rt.db.dispose()
    rt = await Runtime.build(settings, clock=clock, backend=backend)
    backend._store.put(created.id, workload)
    try:
        clock.advance(2)
        await rt.reconciler.settle()
        fault = await rt.instances.load(created.id)
        assert fault is not None and fault.status is InstanceStatus.UNAVAILABLE
        assert fault.failed is not None and fault.failed.code == "ModelArts.6361"
        assert fault.failed.detail["cause"] == "unresponsive"

        # Still frozen long past the start timeout: neither relaunched nor failed.
        clock.advance(settings.start_timeout_seconds * 2)
        await rt.reconciler.settle()
        waiting = await rt.instances.load(created.id)
        assert waiting is not None and waiting.status is InstanceStatus.UNAVAILABLE

        backend.frozen.discard(created.id)
        await rt.reconciler.settle()
        back = await rt.instances.load(created.id)
        assert back is not None and back.status is InstanceStatus.RUNNING
        assert back.failed is None and back.endpoint is not None
        assert back.running_since == fault.running_since  # the same run, not a relaunch
        assert backend.launches == 1
        assert "unanswered_probes" not in (back.handle or {})
    finally:
        await rt.close()


async def test_missed_probes_are_forgotten_once_it_answers(
    tmp_path: Path,
) -> None:
    async with _engine(tmp_path, _FreezableBackend) as (rt, backend):
        created = await rt.service.create(principal=PRINCIPAL, body=_body("blip"))
        await rt.reconciler.settle()
        for _ in range(5):  # two misses, an answer, two misses...: never three in a row
            backend.frozen.add(created.id)
            await rt.reconciler.settle()
            await rt.reconciler.settle()
            backend.frozen.discard(created.id)
            await rt.reconciler.settle()
        instance = await rt.instances.load(created.id)
        assert instance is not None and instance.status is InstanceStatus.RUNNING
        assert "unanswered_probes" not in (instance.handle or {})
