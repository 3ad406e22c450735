"""The host's counters and GPU assignments, kept in the status write's transaction.

Each counted resource of the host is a ``quota_usage`` row (``host:{host}:cpus`` in
milli-CPUs, ``…:memory`` in MiB, ``…:gpus``), taken by one conditional UPDATE,

    UPDATE quota_usage SET used = used + :need WHERE scope = :s AND used + :need <= :limit

after the capacity slot, in ``hostfit.RESOURCES`` order, and given back the same way.
The GPU counter's row lock serialises every writer that assigns GPUs on the host, so the
pick that follows (``gpu_assignments`` rows, whose primary key (host, gpu) would refuse
a second holder anyway) never races another one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sqlalchemy import Integer, bindparam, case, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from demanager.domain.hostfit import GPUS, Inventory, pick_gpus
from demanager.store.reads import Reading
from demanager.store.tables import GpuAssignmentRow, QuotaUsageRow

_NEED = bindparam("need", type_=Integer)

_TAKE = (
    update(QuotaUsageRow)
    .where(
        QuotaUsageRow.scope == bindparam("counter_scope"),
        QuotaUsageRow.used + _NEED <= bindparam("limit", type_=Integer),
    )
    .values(used=QuotaUsageRow.used + _NEED)
)
_GIVE_BACK = (
    update(QuotaUsageRow)
    .where(QuotaUsageRow.scope == bindparam("counter_scope"))
    # Never below zero: counters that started after their holders (an upgrade) have
    # less to give back than those holders took.
    .values(used=case((QuotaUsageRow.used > _NEED, QuotaUsageRow.used - _NEED), else_=0))
)


def host_scope(host: str, resource: str) -> str:
    return f"host:{host}:{resource}"


async def take(
    session: AsyncSession, inventory: Inventory, need: Mapping[str, int]
) -> bool:
    """Take ``need`` of each resource, in order; False (and the caller rolls back) as soon
    as one does not fit."""
    limits = inventory.limits()
    for resource, amount in need.items():
        scope = host_scope(inventory.host, resource)
        params = {"counter_scope": scope, "need": amount, "limit": limits[resource]}
        if (await session.execute(_TAKE, params)).rowcount == 1:  # type: ignore[attr-defined]
            continue
        # No counter yet: create it (a concurrent creator's win is absorbed), try again.
        try:
            async with session.begin_nested():
                session.add(QuotaUsageRow(scope=scope, used=0))
        except IntegrityError:
            pass
        if (await session.execute(_TAKE, params)).rowcount != 1:  # type: ignore[attr-defined]
            return False
    return True


async def give_back(session: AsyncSession, inventory: Inventory, need: Mapping[str, int]) -> None:
    for resource, amount in need.items():
        scope = host_scope(inventory.host, resource)
        await session.execute(_GIVE_BACK, {"counter_scope": scope, "need": amount})


async def assign_gpus(
    session: AsyncSession, inventory: Inventory, instance_id: str, count: int, now_ms: int
) -> tuple[str, ...]:
    """Give ``count`` free GPUs of the host to the instance; ``()`` when too few are free.
    Call it holding the host's GPU counter (``take``), which serialises the pickers."""
    assert inventory.gpus is not None
    await release_gpus(session, instance_id)  # a leftover of an interrupted write
    for _ in range(3):
        taken = set(
            await session.scalars(
                select(GpuAssignmentRow.gpu).where(GpuAssignmentRow.host == inventory.host)
            )
        )
        picked = pick_gpus(inventory.gpus, taken, count)
        if not picked:
            return ()
        try:
            async with session.begin_nested():
                session.add_all(
                    GpuAssignmentRow(
                        host=inventory.host, gpu=gpu, instance_id=instance_id, assigned_at=now_ms
                    )
                    for gpu in picked
                )
        except IntegrityError:
            continue  # taken meanwhile by a writer that did not hold the counter: pick again
        return picked
    return ()


async def release_gpus(session: AsyncSession, instance_id: str) -> None:
    await session.execute(
        delete(GpuAssignmentRow).where(GpuAssignmentRow.instance_id == instance_id)
    )


async def used(conn: Reading, inventory: Inventory) -> dict[str, int]:
    """What instances take of each counted resource now, by resource."""
    scopes = {host_scope(inventory.host, r): r for r in inventory.limits()}
    rows = await conn.execute(
        select(QuotaUsageRow.scope, QuotaUsageRow.used).where(QuotaUsageRow.scope.in_(scopes))
    )
    return {scopes[scope]: int(n) for scope, n in rows.all()}


async def recount(
    session: AsyncSession,
    inventory: Inventory,
    holders: Iterable[tuple[str, Mapping[str, int]]],
) -> None:
    """Set each counter to what ``holders`` (instance id, need) take, and drop the GPU
    assignments of instances that no longer hold resources.

    The caller locks the counters first (``lock``) and reads the holders after: a write
    committed before the lock is in that read, one still open takes or gives back after
    this commits, so its change lands on the recounted value.
    """
    totals = dict.fromkeys(inventory.limits(), 0)
    keep: set[str] = set()
    for instance_id, need in holders:
        keep.add(instance_id)
        for resource, amount in need.items():
            totals[resource] += amount
    for resource, total in totals.items():
        scope = host_scope(inventory.host, resource)
        await session.execute(
            update(QuotaUsageRow).where(QuotaUsageRow.scope == scope).values(used=total)
        )
    if GPUS in totals:
        # Instance rows are left alone (a row lock taken after the counters' could
        # deadlock with a status write); their ``gpus`` shows only while they hold.
        stale = delete(GpuAssignmentRow).where(GpuAssignmentRow.host == inventory.host)
        if keep:
            stale = stale.where(GpuAssignmentRow.instance_id.not_in(keep))
        await session.execute(stale)


async def lock(session: AsyncSession, inventory: Inventory) -> None:
    """Create the host's counters if missing and lock them (a no-op UPDATE takes the row
    locks on PostgreSQL, and SQLite's write lock)."""
    for resource in inventory.limits():
        scope = host_scope(inventory.host, resource)
        try:
            async with session.begin_nested():
                session.add(QuotaUsageRow(scope=scope, used=0))
        except IntegrityError:
            pass
        await session.execute(
            update(QuotaUsageRow)
            .where(QuotaUsageRow.scope == scope)
            .values(used=QuotaUsageRow.used)
        )
