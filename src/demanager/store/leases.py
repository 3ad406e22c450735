"""Leases let several engines share one database without driving the same instance.

An engine claims an instance before acting on it; the claim is one conditional
UPDATE, so of two engines exactly one gets it. A lease that is not renewed runs
out, so a crashed engine's instances are picked up by the next one after at
most ``ttl``. Lease columns are not part of the instance's version: claiming
never makes another writer's optimistic update fail.
"""

from __future__ import annotations

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from demanager.store.tables import InstanceRow


class LeaseRepository:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def claim(self, instance_id: str, owner: str, *, now_ms: int, ttl_ms: int) -> bool:
        """Take or renew the lease; False when another live engine holds it."""
        async with self._sessions() as session:
            result = await session.execute(
                update(InstanceRow)
                .where(
                    InstanceRow.id == instance_id,
                    or_(
                        InstanceRow.lease_owner.is_(None),
                        InstanceRow.lease_owner == owner,
                        InstanceRow.lease_until < now_ms,
                    ),
                )
                .values(lease_owner=owner, lease_until=now_ms + ttl_ms)
            )
            await session.commit()
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]

    async def release(self, instance_id: str, owner: str) -> None:
        async with self._sessions() as session:
            await session.execute(
                update(InstanceRow)
                .where(InstanceRow.id == instance_id, InstanceRow.lease_owner == owner)
                .values(lease_owner=None, lease_until=None)
            )
            await session.commit()

    async def owners(self) -> list[str]:
        async with self._sessions() as session:
            result = await session.scalars(
                select(InstanceRow.lease_owner)
                .where(InstanceRow.lease_owner.is_not(None))
                .distinct()
            )
            return [owner for owner in result if owner]

    async def release_all(self, owner: str) -> None:
        async with self._sessions() as session:
            await session.execute(
                update(InstanceRow)
                .where(InstanceRow.lease_owner == owner)
                .values(lease_owner=None, lease_until=None)
            )
            await session.commit()
