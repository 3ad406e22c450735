"""Pools managed at run time: the directory the catalog answers from, and its refresher."""

from __future__ import annotations

import asyncio
from pathlib import Path

from demanager.domain.catalog import Catalog, Pool
from demanager.domain.pools import PoolDirectory, within_catalog
from demanager.engine.pools import PoolRefresher
from demanager.store.database import make_engine, make_sessionmaker, upgrade
from demanager.store.pools import PoolRepository

FILE_POOL = Pool("lab", "Lab", capacity={"a": 1})


def test_a_managed_pool_replaces_the_catalogs_until_deleted() -> None:
    directory = PoolDirectory({"lab": FILE_POOL})
    assert directory["lab"] is FILE_POOL
    managed = Pool("lab", "Lab", ready=False, capacity={"a": 3})
    extra = Pool("gpu", "GPU", owner_project="p1")
    before = directory.current
    directory.replace([managed, extra])
    assert directory["lab"] is managed and directory.get("gpu") is extra
    assert dict(before) == {"lab": FILE_POOL}  # a snapshot never changes under a reader
    directory.replace([])
    assert dict(directory) == {"lab": FILE_POOL}


def test_capacity_for_flavors_the_catalog_lost_is_dropped() -> None:
    pool = Pool("lab", "Lab", capacity={"a": 1, "gone": 2})
    assert within_catalog(pool, {"a"}).capacity == {"a": 1}
    assert within_catalog(FILE_POOL, {"a"}) is FILE_POOL


async def test_the_refresher_puts_the_tables_pools_in_force(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'demanager.db'}"
    await asyncio.to_thread(upgrade, url)
    engine = make_engine(url)
    try:
        repo = PoolRepository(make_sessionmaker(engine))
        directory = PoolDirectory({"lab": FILE_POOL})
        catalog = Catalog.from_mapping({
            "profiles": [{"id": "p", "flavor_type": "CPU"}],
            "flavors": [{"name": "a", "type": "CPU"}],
        })
        from dataclasses import replace

        live = replace(catalog, pools=directory)
        refresher = PoolRefresher(
            repository=repo, directory=directory, flavors={"a"}, interval=0.01
        )
        await repo.put(Pool("lab", "Lab", capacity={"a": 5, "gone": 1}), now_ms=1)
        await repo.put(Pool("new", "New", ready=False), now_ms=1)
        assert live.capacity_of("lab", "a") == 1
        refresher.start()
        for _ in range(200):
            if live.capacity_of("lab", "a") == 5:
                break
            await asyncio.sleep(0.01)
        assert live.capacity_of("lab", "a") == 5
        assert live.pools["lab"].capacity == {"a": 5}
        assert not live.pools["new"].ready
        assert await repo.delete("lab") and not await repo.delete("lab")
        await refresher.refresh()
        assert live.pools["lab"] is FILE_POOL
        await refresher.stop()
    finally:
        await engine.dispose()
