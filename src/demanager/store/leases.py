"""Leases and replicas: how several engines share one database without driving the same
instance, and without touching workloads they cannot see.

An engine claims an instance before acting on it; the claim is one conditional UPDATE,
so of two engines exactly one gets it. A lease that is not renewed runs out, so a
crashed engine's instances are picked up by the next one after at most ``ttl``. Lease
columns are not part of the instance's version: claiming never makes another writer's
optimistic update fail. Every write the engine makes is *fenced*: it names the lease
owner in its WHERE clause (``InstanceRepository.save(fence=…)``), so a replica whose
lease ran out and was taken cannot write, however late it wakes up.

Each engine also keeps a row in ``engine_replicas`` with its node and a heartbeat:
that is how a replica tells a workload of a live node (hand it over) from one of a
node that is gone (take it over).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from sqlalchemy import delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from demanager.store.tables import InstanceRow, ReplicaRow

log = logging.getLogger(__name__)


class LeaseRepository:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    # --- instance leases ------------------------------------------------------------

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

    @contextlib.asynccontextmanager
    async def kept(
        self, instance_id: str, owner: str, *, now_ms: Callable[[], int], ttl_ms: int
    ) -> AsyncIterator[None]:
        """Renew the lease every third of ``ttl`` while the body runs, so a long step (a
        stop's grace period, a volume scan, removing a large volume) cannot outlive it.
        Renewal is paced by wall time; a renewal that fails is logged, and the next
        fenced write of the body then fails with ``LeaseLost``."""

        async def renew() -> None:
            while True:
                await asyncio.sleep(ttl_ms / 3000)
                try:
                    if not await self.claim(instance_id, owner, now_ms=now_ms(), ttl_ms=ttl_ms):
                        log.warning("%s: lost the lease in the middle of a step", instance_id)
                        return
                except Exception:  # the store may be briefly away; the fence still holds
                    log.warning("%s: could not renew the lease", instance_id, exc_info=True)

        task = asyncio.create_task(renew(), name=f"lease {instance_id}")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

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

    # --- replicas -------------------------------------------------------------------

    async def heartbeat(self, owner: str, node: str, *, now_ms: int) -> None:
        """Say that ``owner`` is alive on ``node`` (an upsert that runs on both stores)."""
        async with self._sessions() as session:
            result = await session.execute(
                update(ReplicaRow).where(ReplicaRow.owner == owner).values(seen_at=now_ms)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                session.add(ReplicaRow(owner=owner, node=node, started_at=now_ms, seen_at=now_ms))
            try:
                await session.commit()
            except IntegrityError:  # two heartbeats of one owner raced: one row is enough
                await session.rollback()

    async def replicas(self, *, now_ms: int, ttl_ms: int) -> dict[str, str]:
        """Live replicas (heartbeat within ``ttl_ms``): owner -> node."""
        async with self._sessions() as session:
            rows = await session.execute(
                select(ReplicaRow.owner, ReplicaRow.node).where(
                    ReplicaRow.seen_at >= now_ms - ttl_ms
                )
            )
            return {str(owner): str(node) for owner, node in rows.all()}

    async def forget_replicas(self, *, seen_before_ms: int) -> None:
        """Remove the rows of replicas that have been silent since ``seen_before_ms``."""
        async with self._sessions() as session:
            await session.execute(delete(ReplicaRow).where(ReplicaRow.seen_at < seen_before_ms))
            await session.commit()

    async def leave(self, owner: str) -> None:
        """A replica that stops: give up its leases and its row."""
        await self.release_all(owner)
        async with self._sessions() as session:
            await session.execute(delete(ReplicaRow).where(ReplicaRow.owner == owner))
            await session.commit()
