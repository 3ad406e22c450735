"""Counts for the metrics endpoint: two grouped reads, no writes.

Both are answered from indexed columns or the small capacity-counter table, so a
scrape costs two short queries however many instances there are (and the caller
caches the answer for a second).
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from demanager.domain.lifecycle import InstanceStatus
from demanager.store.tables import InstanceRow, QuotaUsageRow

CAPACITY_PREFIX = "capacity:"
"""The scope of the capacity counters (``store.instances.capacity_scope``)."""


async def instances_by_status(engine: AsyncEngine) -> dict[tuple[str, str], int]:
    """Instances not deleted, per (status, flavor)."""
    query = (
        select(InstanceRow.status, InstanceRow.flavor, func.count())
        .where(InstanceRow.status != InstanceStatus.DELETED.value)
        .group_by(InstanceRow.status, InstanceRow.flavor)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return {(status, flavor): int(count) for status, flavor, count in rows}


async def capacity_used(engine: AsyncEngine) -> dict[tuple[str, str], int]:
    """Instances holding resources, per (pool id, flavor); the pool id is empty for the
    shared pool. Read from the counters admission takes slots from."""
    query = select(QuotaUsageRow.scope, QuotaUsageRow.used).where(
        QuotaUsageRow.scope.startswith(CAPACITY_PREFIX)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    used: dict[tuple[str, str], int] = {}
    for scope, count in rows:
        pool, _, flavor = scope[len(CAPACITY_PREFIX) :].partition(":")
        used[(pool, flavor)] = int(count or 0)
    return used
