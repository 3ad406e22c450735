"""Two engines on one database never drive the same instance at once."""

from __future__ import annotations

import asyncio
from pathlib import Path

from demanager.engine.runtime import Runtime
from demanager.identity.principal import Principal, Role
from demanager.settings import Settings
from demanager.store.database import make_engine, make_sessionmaker, upgrade
from demanager.store.leases import LeaseRepository


async def test_one_claim_wins_and_expiry_frees_it(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, backend="fake", bootstrap_token="t")
    await asyncio.to_thread(upgrade, settings.sqlalchemy_url)
    runtime = await Runtime.build(settings)
    owner = Principal("0" * 32, "alice", "p", Role.MEMBER)
    body = {
        "name": "a",
        "profile_id": "Multi-Engine 1.0 (python3)-cpu",
        "flavor": "modelarts.vm.cpu.2u",
        "spec": {"storage": {"type": "evs"}},
    }
    instance = await runtime.service.create(principal=owner, body=body)
    await runtime.reconciler.settle()  # the engine's own drive claims, then releases
    engine = make_engine(settings.sqlalchemy_url)
    leases = LeaseRepository(make_sessionmaker(engine))
    try:
        assert await leases.claim(instance.id, "engine-a", now_ms=1_000, ttl_ms=100)
        assert not await leases.claim(instance.id, "engine-b", now_ms=1_050, ttl_ms=100)
        assert await leases.claim(instance.id, "engine-a", now_ms=1_050, ttl_ms=100), "renewal"
        assert await leases.claim(instance.id, "engine-b", now_ms=1_200, ttl_ms=100), "expired"
        await leases.release(instance.id, "engine-a")  # not the holder: no effect
        assert not await leases.claim(instance.id, "engine-a", now_ms=1_250, ttl_ms=100)
        await leases.release(instance.id, "engine-b")
        assert await leases.claim(instance.id, "engine-a", now_ms=1_250, ttl_ms=100)
    finally:
        await engine.dispose()
        await runtime.close()
