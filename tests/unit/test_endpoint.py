"""The engine stores the backend's endpoint while an instance runs, and only then."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from demanager.backends.fake import FakeBackend
from demanager.domain.lifecycle import InstanceStatus
from demanager.engine.clock import FakeClock
from demanager.engine.runtime import Runtime, backend_context
from demanager.settings import Settings
from demanager.store.database import upgrade
from tests.unit.test_reconciler import PRINCIPAL, _body


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    settings = Settings(data_dir=tmp_path, backend="fake", bootstrap_token="t")
    await asyncio.to_thread(upgrade, settings.sqlalchemy_url)
    fake = FakeBackend(settings.fake, backend_context(settings))
    built = await Runtime.build(settings, clock=FakeClock(), backend=fake)
    yield built
    await built.close()


async def test_running_has_an_endpoint_and_stopped_has_none(runtime: Runtime) -> None:
    created = await runtime.service.create(principal=PRINCIPAL, body=_body("e"))
    await runtime.reconciler.settle()
    running = await runtime.instances.load(created.id)
    assert running is not None and running.status is InstanceStatus.RUNNING
    assert running.endpoint is not None and running.handle is not None
    assert running.endpoint.host == "127.0.0.1"
    assert running.endpoint.base_path == f"/notebooks/{created.id}/"
    assert running.endpoint.headers == {"Authorization": f"token {running.handle['token']}"}

    await runtime.service.act(principal=PRINCIPAL, instance_id=created.id,
                              body={"action": "stop"})
    await runtime.reconciler.settle()
    stopped = await runtime.instances.load(created.id)
    assert stopped is not None and stopped.status is InstanceStatus.STOPPED
    assert stopped.endpoint is None


async def test_a_running_row_without_endpoint_gets_one(runtime: Runtime) -> None:
    """Rows that were RUNNING when migration 0004 added the column."""
    created = await runtime.service.create(principal=PRINCIPAL, body=_body("u"))
    await runtime.reconciler.settle()
    running = await runtime.instances.load(created.id)
    assert running is not None and running.endpoint is not None
    await runtime.instances.save(running, now_ms=running.updated_at, endpoint=None)
    bare = await runtime.instances.load(created.id)
    assert bare is not None and bare.endpoint is None
    await runtime.reconciler.settle()
    refilled = await runtime.instances.load(created.id)
    assert refilled is not None and refilled.endpoint == running.endpoint
    await runtime.reconciler.settle()  # and then it is at rest: no write per sweep
    again = await runtime.instances.load(created.id)
    assert again is not None and again.version == refilled.version


async def test_an_endpoint_that_moved_is_stored_again(runtime: Runtime) -> None:
    """A container relaunched by another route (a daemon restart) answers elsewhere."""
    from dataclasses import replace

    created = await runtime.service.create(principal=PRINCIPAL, body=_body("m"))
    await runtime.reconciler.settle()
    running = await runtime.instances.load(created.id)
    assert running is not None and running.endpoint is not None
    elsewhere = replace(running.endpoint, port=1)
    await runtime.instances.save(running, now_ms=running.updated_at, endpoint=elsewhere)
    await runtime.reconciler.settle()
    fixed = await runtime.instances.load(created.id)
    assert fixed is not None and fixed.endpoint == running.endpoint


async def test_the_proxy_reads_again_a_row_that_would_refuse(runtime: Runtime) -> None:
    """A stop and a start within the proxy's cache period: the first request after the
    start reaches the new workload, not the refusal the cached STOPPED row would give."""
    from demanager.proxy.access import InstanceCache

    cache = InstanceCache(runtime, ttl=60.0)
    created = await runtime.service.create(principal=PRINCIPAL, body=_body("c"))
    assert (await cache.get(created.id)).status is InstanceStatus.CREATING  # type: ignore[union-attr]
    await runtime.reconciler.settle()
    running = await cache.get(created.id)
    assert running is not None and running.status is InstanceStatus.RUNNING
    # Open rows are kept for the cache period: the store is not read again.
    await runtime.instances.save(running, now_ms=running.updated_at, description="changed")
    assert (await cache.get(created.id)).description == running.description  # type: ignore[union-attr]
