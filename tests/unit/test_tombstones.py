"""Deleted instances' rows are purged by the sweep once the retention has passed."""

from __future__ import annotations

import asyncio
from pathlib import Path

from demanager.domain.lifecycle import InstanceStatus
from demanager.engine.clock import FakeClock
from demanager.engine.runtime import Runtime
from demanager.identity.principal import Principal, Role
from demanager.settings import Settings
from demanager.store.database import upgrade
from tests.conftest import MINIMAL_BODY

OWNER = Principal("0" * 32, "alice", "p", Role.MEMBER)


def _body(name: str) -> dict[str, object]:
    return {**MINIMAL_BODY, "name": name}


async def test_defect_07_tombstones_are_purged_after_the_retention(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path, backend="fake", bootstrap_token="t", tombstone_retention_seconds=3600
    )
    await asyncio.to_thread(upgrade, settings.sqlalchemy_url)
    clock = FakeClock()
    runtime = await Runtime.build(settings, clock=clock)
    try:
        gone = await runtime.service.create(principal=OWNER, body=_body("gone"))
        kept = await runtime.service.create(principal=OWNER, body=_body("kept"))
        await runtime.reconciler.settle()
        await runtime.service.act(principal=OWNER, instance_id=gone.id, body={"action": "stop"})
        await runtime.reconciler.settle()
        await runtime.service.delete(principal=OWNER, instance_id=gone.id)
        await runtime.reconciler.settle()
        tombstone = await runtime.instances.load(gone.id)
        assert tombstone is not None and tombstone.status is InstanceStatus.DELETED

        clock.advance(3500)
        await runtime.reconciler.settle()
        assert await runtime.instances.load(gone.id) is not None, "within the retention"

        clock.advance(200)
        await runtime.reconciler.settle()
        assert await runtime.instances.load(gone.id) is None
        assert await runtime.instances.load(kept.id) is not None, "live rows stay"
    finally:
        await runtime.close()
