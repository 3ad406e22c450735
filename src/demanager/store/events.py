"""The event log's rows: appended inside the session of the write they describe
(``append``), read in pages or after a known id, purged after their retention.

Ids are the order: they only grow, so ``after`` an id a stream has seen is exactly
what it has not, whichever replica wrote it.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from demanager.domain.events import Event, EventDraft, EventKind
from demanager.domain.instance import Instance
from demanager.store.tables import EventRow

_LOCK = text("SELECT pg_advisory_xact_lock(:key)")
_LOCK_KEY = 0x64656D65_76656E74 & 0x7FFF_FFFF_FFFF_FFFF
"""The event log's advisory lock key ("demevent"); no other part takes advisory locks."""


@dataclass(frozen=True)
class EventFilter:
    """Which events a reader may see: one project, maybe one instance, maybe only the
    instances of one owner."""

    project_id: str
    instance_id: str | None = None
    user_id: str | None = None

    def admits(self, event: Event) -> bool:
        return (
            event.project_id == self.project_id
            and (self.instance_id is None or event.instance_id == self.instance_id)
            and (self.user_id is None or event.user_id == self.user_id)
        )


async def append(
    session: AsyncSession, instance: Instance, draft: EventDraft, at_ms: int
) -> int:
    """Add ``draft`` to the session's transaction; returns the new event's id.

    Call it last before the commit. On PostgreSQL it takes a transaction-scoped lock
    that makes events commit in the order of their ids: a stream that sent id 11 must
    never see 10 commit afterwards (sequences hand ids out at insert, not at commit).
    SQLite runs one writer at a time anyway.
    """
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(_LOCK, {"key": _LOCK_KEY})
    row = EventRow(
        instance_id=instance.id,
        project_id=instance.project_id,
        user_id=instance.user_id,
        at_ms=at_ms,
        kind=draft.kind.value,
        actor=draft.actor,
        message=draft.message,
        code=draft.code,
        detail=dict(draft.detail) or None,
    )
    session.add(row)
    await session.flush()
    return int(row.id)


async def last_of_kind(session: AsyncSession, instance_id: str, kind: EventKind) -> Event | None:
    row = await session.scalar(
        select(EventRow)
        .where(EventRow.instance_id == instance_id, EventRow.kind == kind.value)
        .order_by(EventRow.id.desc())
        .limit(1)
    )
    return None if row is None else _to_domain(row)


class EventRepository:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._engine: AsyncEngine = sessions.kw["bind"]

    async def page(
        self, scope: EventFilter, *, limit: int, offset: int = 0, after: int = 0
    ) -> tuple[int, builtins.list[Event]]:
        """(how many events match, the page of them oldest first)."""
        conditions = _conditions(scope, after)
        async with self._engine.connect() as conn:
            total = int(
                await conn.scalar(select(func.count()).select_from(EventRow).where(*conditions))
                or 0
            )
            rows = await conn.execute(
                select(EventRow.__table__)
                .where(*conditions)
                .order_by(EventRow.id)
                .offset(offset)
                .limit(limit)
            )
            return total, [_to_domain(r) for r in rows]

    async def tail(
        self, *, after: int, limit: int, scope: EventFilter | None = None
    ) -> builtins.list[Event]:
        """Events with an id above ``after``, oldest first: every project's, or ``scope``'s."""
        conditions = _conditions(scope, after) if scope is not None else [EventRow.id > after]
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(EventRow.__table__).where(*conditions).order_by(EventRow.id).limit(limit)
            )
            return [_to_domain(r) for r in rows]

    async def latest_id(self, scope: EventFilter | None = None) -> int:
        """The newest event's id (``scope``'s, or every project's); 0 when none."""
        conditions = _conditions(scope, 0) if scope is not None else []
        async with self._engine.connect() as conn:
            found = await conn.scalar(select(func.max(EventRow.id)).where(*conditions))
        return int(found or 0)

    async def purge(self, *, before_ms: int) -> int:
        """Remove the events older than ``before_ms``; returns how many went."""
        async with self._engine.begin() as conn:
            result = await conn.execute(delete(EventRow).where(EventRow.at_ms < before_ms))
        return int(result.rowcount)


def _conditions(scope: EventFilter, after: int) -> builtins.list[Any]:
    conditions: builtins.list[Any] = [EventRow.project_id == scope.project_id]
    if scope.instance_id is not None:
        conditions.append(EventRow.instance_id == scope.instance_id)
    if scope.user_id is not None:
        conditions.append(EventRow.user_id == scope.user_id)
    if after:
        conditions.append(EventRow.id > after)
    return conditions


def _to_domain(row: Any) -> Event:
    return Event(
        id=int(row.id),
        instance_id=row.instance_id,
        project_id=row.project_id,
        user_id=row.user_id,
        at_ms=int(row.at_ms),
        kind=EventKind(row.kind),
        actor=row.actor,
        message=row.message,
        code=row.code,
        detail=dict(row.detail or {}),
    )
