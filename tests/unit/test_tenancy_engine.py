"""Quotas, freezing and retention through the engine and the real SQLite store, with a
fake clock: hours of store_time pass in milliseconds."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from demanager import errors
from demanager.backends.base import BackendContext, LaunchSpec
from demanager.backends.fake import FakeBackend, FakeHandle
from demanager.backends.options import FakeOptions
from demanager.domain.instance import Instance, Storage
from demanager.domain.lifecycle import InstanceStatus as S
from demanager.engine.clock import FakeClock
from demanager.engine.projects import ProjectAdmin
from demanager.engine.runtime import Runtime, backend_context
from demanager.identity.principal import Principal, Role
from demanager.settings import Settings
from demanager.store.database import upgrade
from demanager.store.projects import ProjectRepository
from demanager.store.tables import QuotaUsageRow

HOUR = 3600
CATALOG = """
profiles:
  - {id: cpu, flavor_type: CPU}
flavors:
  - {name: day, type: CPU, params: {CPU: 1}, store_time: 24}
  - {name: forever, type: CPU, params: {CPU: 1}}
  - {name: free, type: CPU, promo_type: Free, params: {CPU: 1}, capacity: 1, store_time: 1}
"""
ALICE = Principal("a" * 32, "alice", "p1", Role.ADMIN)
BOB = Principal("b" * 32, "bob", "p2", Role.ADMIN)


class RecordingBackend(FakeBackend):
    """Remembers which instances' volumes it was asked to delete."""

    def __init__(self, options: FakeOptions, context: BackendContext) -> None:
        super().__init__(options, context)
        self.deleted: list[str] = []
        self.gate: asyncio.Event | None = None

    async def delete(self, instance_id: str, handle: FakeHandle | None, storage: Storage) -> None:
        self.deleted.append(instance_id)
        await super().delete(instance_id, handle, storage)

    async def start(self, spec: LaunchSpec) -> FakeHandle:
        if self.gate is not None:  # a start held back until the test lets it go
            await self.gate.wait()
        return await super().start(spec)


@dataclass
class Engine:
    rt: Runtime
    clock: FakeClock
    backend: RecordingBackend
    admin: ProjectAdmin

    async def create(self, name: str, flavor: str, who: Principal = ALICE) -> Instance:
        body = {"name": name, "profile_id": "cpu", "flavor": flavor,
                "spec": {"storage": {"type": "evs"}}}
        return await self.rt.service.create(principal=who, body=body)

    async def act(self, instance: Instance, action: str, who: Principal = ALICE) -> S:
        current, _ = await self.rt.service.act(
            principal=who, instance_id=instance.id, body={"action": action})
        return current

    async def status(self, instance: Instance) -> S | None:
        found = await self.rt.instances.load(instance.id)
        return None if found is None else found.status

    async def settle(self) -> None:
        # A freed slot wakes its queue's head from a task of its own, which one settle
        # may not wait for; the second sweep admits the head whatever that task did.
        await self.rt.reconciler.settle()
        await self.rt.reconciler.settle()

    async def used(self, scope: str) -> int:
        async with self.rt.sessions() as session:
            return int(await session.scalar(
                select(QuotaUsageRow.used).where(QuotaUsageRow.scope == scope)) or 0)


@contextlib.asynccontextmanager
async def _engine(tmp_path: Path, **settings: Any) -> AsyncIterator[Engine]:
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(CATALOG, encoding="utf-8")
    config = Settings(data_dir=tmp_path / "data", backend="fake", bootstrap_token="t",
                      catalog_file=catalog, **settings)
    config.data_dir.mkdir()
    await asyncio.to_thread(upgrade, config.sqlalchemy_url)
    clock = FakeClock()
    backend = RecordingBackend(config.fake, backend_context(config))
    rt = await Runtime.build(config, clock=clock, backend=backend)
    admin = ProjectAdmin(projects=ProjectRepository(rt.sessions), service=rt.service,
                         clock=clock, default_quota=config.instance_quota)
    try:
        yield Engine(rt, clock, backend, admin)
    finally:
        await rt.close()


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Engine]:
    async with _engine(tmp_path) as built:
        yield built


# --- retention ------------------------------------------------------------------------


async def test_an_instance_stopped_longer_than_store_time_is_deleted(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    stopped = await engine.create("stopped", "day")
    running = await engine.create("running", "day")
    kept = await engine.create("kept", "forever")
    frozen = await engine.create("frozen", "day")
    await engine.settle()
    for instance in (stopped, kept, frozen):
        assert await engine.act(instance, "stop") is S.STOPPING
    await engine.settle()
    await engine.admin.freeze_instance(frozen.id)
    assert await engine.used("project:p1") == 4

    engine.clock.advance(24 * HOUR - 60)
    await engine.settle()
    assert await engine.status(stopped) is S.STOPPED, "within its store_time"

    engine.clock.advance(120)
    with caplog.at_level(logging.INFO, logger="demanager.engine.retention"):
        await engine.settle()
    gone = await engine.rt.instances.load(stopped.id)
    assert gone is not None and gone.status is S.DELETED and not gone.cleanup_pending
    assert engine.backend.deleted == [stopped.id], "its volume went through the backend"
    assert f"{stopped.id}: STOPPED since" in caplog.text and "24 h" in caplog.text
    assert await engine.status(running) is S.RUNNING, "in use: never"
    assert await engine.status(kept) is S.STOPPED, "store_time -1: forever"
    assert await engine.status(frozen) is S.STOPPED, "frozen: its rest is not its owner's"
    # The delete gave its quota back, as a caller's delete does.
    assert await engine.used("project:p1") == 3
    assert await engine.used("flavor:p1:day") == 2

    # Thawed, it counts from the thaw, not from its stop.
    await engine.admin.unfreeze_instance(frozen.id)
    engine.clock.advance(24 * HOUR - 60)
    await engine.settle()
    assert await engine.status(frozen) is S.STOPPED
    engine.clock.advance(120)
    await engine.settle()
    assert await engine.status(frozen) is S.DELETED


async def test_any_accepted_change_restarts_the_count(engine: Engine) -> None:
    instance = await engine.create("nb", "day")
    await engine.settle()
    await engine.act(instance, "stop")
    await engine.settle()
    engine.clock.advance(23 * HOUR)
    await engine.rt.service.update(principal=ALICE, instance_id=instance.id,
                                   body={"description": "still wanted"})
    engine.clock.advance(2 * HOUR)
    await engine.settle()
    assert await engine.status(instance) is S.STOPPED
    engine.clock.advance(22 * HOUR + 60)
    await engine.settle()
    assert await engine.status(instance) is S.DELETED


async def test_failed_instances_expire_and_queued_ones_do_not(engine: Engine) -> None:
    holder = await engine.create("holder", "free")
    waiting = await engine.create("waiting", "free", BOB)
    assert waiting.status is S.CREATE_QUEUING
    await engine.settle()
    engine.clock.advance(48 * HOUR)
    await engine.settle()
    assert await engine.status(holder) is S.RUNNING
    assert await engine.status(waiting) is S.CREATE_QUEUING, "waiting to run: not inactive"

    # A create that failed is inactive from its failure on.
    failed = (await engine.create("failed", "day")).evolve(version=0)
    await engine.rt.instances.transition(
        failed, S.CREATE_FAILED, now_ms=engine.clock.now_ms())
    engine.clock.advance(25 * HOUR)
    await engine.settle()
    assert await engine.status(failed) is S.DELETED


# --- quotas ---------------------------------------------------------------------------


async def test_a_projects_quota_replaces_the_default_until_reset(engine: Engine) -> None:
    await engine.admin.set_quota("p1", 1)
    await engine.create("one", "forever")
    with pytest.raises(errors.InstanceQuotaReached, match=r"\(1\)"):
        await engine.create("two", "forever")
    # The atomic counter holds the same limit when the read check is passed by.
    second = (await engine.create("x", "forever", BOB)).evolve(
        id="DE-00000000-0000-0000-0000-000000000001", project_id="p1", name="two")
    with pytest.raises(errors.InstanceQuotaReached):
        await engine.rt.instances.add(second, project_quota=1, flavor_quota=None)
    await engine.create("other-project", "forever", BOB)  # p2 keeps the default
    await engine.admin.set_quota("p1", None)
    await engine.create("two", "forever")
    states = {p.settings.project_id: p for p in await engine.admin.list()}
    assert states["p1"].live == 2 and states["p1"].settings.instance_quota is None
    assert states["p2"].live == 2


# --- freezing -------------------------------------------------------------------------


async def test_a_frozen_project_refuses_creates_even_past_the_read_check(
    engine: Engine,
) -> None:
    running = await engine.create("running", "forever")
    await engine.settle()
    assert (await engine.admin.freeze("p1")).frozen == 1
    with pytest.raises(errors.ProjectFrozen):
        await engine.create("new", "forever")
    # The store checks again under the project counter's lock, which a freeze takes.
    racing = running.evolve(id="DE-00000000-0000-0000-0000-000000000002", name="racing",
                            status=S.CREATING, version=0)
    with pytest.raises(errors.ProjectFrozen):
        await engine.rt.instances.add(racing, project_quota=10, flavor_quota=None)
    assert await engine.rt.instances.load(racing.id) is None
    assert await engine.used("project:p1") == 1
    # What runs goes on running; stop and delete stay allowed.
    assert await engine.status(running) is S.RUNNING
    with pytest.raises(errors.InstanceFrozen):
        await engine.act(running, "restart")
    await engine.act(running, "stop")
    await engine.settle()
    with pytest.raises(errors.InstanceFrozen):
        await engine.act(running, "start")
    assert await engine.status(running) is S.STOPPED

    with pytest.raises(errors.ProjectFrozen):  # its project's freeze covers it
        await engine.admin.unfreeze_instance(running.id)
    assert await engine.admin.unfreeze("p1") == 1
    assert await engine.act(running, "start") is S.STARTING
    await engine.create("new", "forever")


async def test_freezing_writes_the_rows_so_a_stale_reader_loses(engine: Engine) -> None:
    instance = await engine.create("nb", "forever")
    await engine.settle()
    before = await engine.rt.instances.load(instance.id)
    assert before is not None
    await engine.admin.freeze_instance(instance.id)
    after = await engine.rt.instances.load(instance.id)
    assert after is not None and after.frozen and after.version == before.version + 1
    assert after.status is S.RUNNING
    with pytest.raises(errors.ConcurrentUpdate):
        await engine.rt.instances.transition(before, S.STOPPING, now_ms=engine.clock.now_ms())


async def test_freeze_with_stop_asks_the_running_instances_to_stop(engine: Engine) -> None:
    first = await engine.create("first", "forever")
    second = await engine.create("second", "forever")
    await engine.settle()
    await engine.act(second, "stop")
    # Still booting when the freeze comes, however busy the machine: it cannot stop yet.
    engine.backend.gate = asyncio.Event()
    booting = await engine.create("booting", "forever")
    result = await engine.admin.freeze("p1", stop=True)
    engine.backend.gate.set()
    assert (result.frozen, result.stopping, result.under_way) == (3, 1, 1)
    # The stop was asked through the normal path; the engine may already be at it.
    assert await engine.status(first) in (S.STOPPING, S.STOPPED)
    await engine.settle()
    assert await engine.status(first) is S.STOPPED
    assert await engine.status(booting) is S.RUNNING, "a freeze never interrupts a start"


async def test_a_frozen_queued_instance_waits_and_blocks_nobody(engine: Engine) -> None:
    holder = await engine.create("holder", "free", BOB)
    frozen = await engine.create("frozen", "free")
    behind = await engine.create("behind", "free", BOB)
    assert (frozen.status, behind.status) == (S.CREATE_QUEUING, S.CREATE_QUEUING)
    await engine.settle()
    await engine.admin.freeze("p1")
    await engine.act(holder, "stop", BOB)
    await engine.settle()
    assert await engine.status(frozen) is S.CREATE_QUEUING, "frozen: never admitted"
    assert await engine.status(behind) is S.RUNNING, "the next in line got the slot"
    with pytest.raises(errors.OperationNotAllowed):  # dequeue is still allowed: not this
        await engine.act(frozen, "stop")
    assert await engine.act(frozen, "dequeue") is S.STOPPED
    with pytest.raises(errors.InstanceFrozen):
        await engine.act(frozen, "queue")

    # Thawed, it queues and is admitted when the slot frees.
    await engine.admin.unfreeze("p1")
    assert await engine.act(frozen, "queue") is S.START_QUEUING
    await engine.act(behind, "stop", BOB)
    await engine.settle()
    assert await engine.status(frozen) is S.RUNNING
