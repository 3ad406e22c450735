"""The pools managed at run time (``demanager pools``): rows <-> ``Pool`` objects.

A managed pool replaces the catalog's pool of the same id. Servers never write here;
they read the whole table every few seconds (``engine/pools.py``), so it stays small
and every read is one statement.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row, delete, func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from demanager.domain.catalog import Pool
from demanager.domain.lifecycle import InstanceStatus
from demanager.store.tables import InstanceRow, PoolRow


class PoolRepository:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._engine: AsyncEngine = sessions.kw["bind"]

    async def all(self) -> list[Pool]:
        """Every managed pool, by id."""
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(PoolRow.__table__).order_by(PoolRow.id))).all()
        return [_to_domain(row) for row in rows]

    async def get(self, pool_id: str) -> Pool | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(select(PoolRow.__table__).where(PoolRow.id == pool_id))
            ).first()
        return _to_domain(row) if row is not None else None

    async def put(self, pool: Pool, *, now_ms: int) -> None:
        """Create or replace the managed pool ``pool.id``."""
        async with self._sessions() as session:
            await session.merge(
                PoolRow(
                    id=pool.id,
                    name=pool.name,
                    type=pool.type,
                    ready=pool.ready,
                    owner_project=pool.owner_project,
                    capacity=dict(pool.capacity),
                    updated_at=now_ms,
                )
            )
            await session.commit()

    async def delete(self, pool_id: str) -> bool:
        """Remove the managed pool; False when there was none."""
        async with self._engine.begin() as conn:
            result = await conn.execute(delete(PoolRow).where(PoolRow.id == pool_id))
        return bool(result.rowcount)

    async def live_instances(self, pool_id: str) -> int:
        """Instances in the pool that are not deleted."""
        async with self._engine.connect() as conn:
            found = await conn.scalar(
                select(func.count()).where(
                    InstanceRow.pool_id == pool_id,
                    InstanceRow.status != InstanceStatus.DELETED.value,
                )
            )
        return int(found or 0)


def _to_domain(row: Row[Any]) -> Pool:
    return Pool(
        id=row.id,
        name=row.name,
        type=row.type,
        ready=bool(row.ready),
        owner_project=row.owner_project,
        capacity={str(name): int(n) for name, n in (row.capacity or {}).items()},
    )
