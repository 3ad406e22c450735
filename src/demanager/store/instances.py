"""The instance repository: rows <-> domain objects, optimistic concurrency, queries.

``transition`` is the one function through which every status write goes: it
checks the lifecycle table and bumps the row version in the same UPDATE, so a
writer holding a stale copy loses (``ConcurrentUpdate``) instead of overwriting.

Capacity is kept in the same writes: an instance whose status enters
``HOLDS_RESOURCES`` takes a slot of its (pool, flavor) scope with one conditional
UPDATE of a counter row, in the transaction of that status write, and one that
leaves it (or is deleted) gives the slot back there too. A slot that cannot be
taken rolls the whole write back (``FlavorSoldOut`` on insert, ``NotEnoughResources``
on a transition), so no number of API replicas or engines can pass a capacity.

With a host inventory (``domain/hostfit.py``), the same writes take and give back the
flavor's CPUs, memory and GPUs of the host after the slot, and assign whole GPUs
(``store/hostfit.py``); a flavor that does not fit what is left is sold out like a
full one.
"""

from __future__ import annotations

import asyncio
import builtins
import functools
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, replace
from typing import Any

import orjson
from sqlalchemy import (
    Boolean,
    Row,
    Select,
    String,
    bindparam,
    delete,
    func,
    literal,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from demanager import errors
from demanager.domain import events
from demanager.domain.catalog import Catalog
from demanager.domain.events import EventDraft
from demanager.domain.hostfit import GPUS, Inventory, amounts, fits
from demanager.domain.instance import (
    AutoStop,
    Endpoint,
    FailedReason,
    Instance,
    InstanceId,
    Location,
    ProjectId,
    Storage,
    UserId,
)
from demanager.domain.lifecycle import HOLDS_RESOURCES, QUEUED, InstanceStatus, ensure_transition
from demanager.domain.queueing import Holder, Waiter
from demanager.domain.validation import ListQuery
from demanager.store import events as event_log
from demanager.store import hostfit
from demanager.store.memo import Memo
from demanager.store.reads import Reading, Reads
from demanager.store.rowjson import row_json
from demanager.store.tables import InstanceRow, ProjectRow, QuotaUsageRow

_LIVE_ACTIVE = InstanceRow.status != InstanceStatus.DELETED.value
SWEEP_CHUNK = 100
"""Rows of a sweep turned into instances between two turns of the event loop."""
READ_MEMO_SIZE = 512
"""How many of the instances the API read lately are remembered: two pages of 200 and
the GETs around them, 5-10 KiB each."""


_TABLE = InstanceRow.__table__

_UNREAD = frozenset({"live_name", "lease_owner", "lease_until"})
"""Columns ``_to_domain`` ignores: the engine's leases change them on every sweep."""

_SOURCE_COLUMNS = [c for c in _TABLE.columns if c.key not in _UNREAD]
_SOURCE = row_json(*_SOURCE_COLUMNS).label("source")
"""What the API's reads select of an instance (``InstanceRepository._from_source``):
every column it is made of, in the table's order, as one JSON array built by the
database. That text is the exact key of the instance built from it, and one value a
row for the driver to hand over."""


def _view_query() -> Select[Any]:
    mine = _TABLE.alias("mine")
    same_flavor = (
        select(func.count())
        .select_from(mine)
        .where(
            mine.c.project_id == bindparam("project_id"),
            mine.c.user_id == bindparam("user_id"),
            mine.c.flavor == _TABLE.c.flavor,
            mine.c.status != InstanceStatus.DELETED.value,
        )
        .scalar_subquery()
    )
    return select(_SOURCE, same_flavor.label("caller_flavor_count")).where(
        _TABLE.c.id == bindparam("instance_id")
    )


# Built once: composing SQLAlchemy expressions costs more than running them on SQLite.
_LOAD = select(_TABLE).where(_TABLE.c.id == bindparam("instance_id"))
_VIEW = _view_query()
_PAGE = select(_TABLE.c.id, _SOURCE).where(_TABLE.c.id.in_(bindparam("ids", expanding=True)))
_COUNT_BY_FLAVOR = (
    select(_TABLE.c.flavor, func.count())
    .where(
        _TABLE.c.project_id == bindparam("project_id"),
        _TABLE.c.user_id == bindparam("user_id"),
        _TABLE.c.status != InstanceStatus.DELETED.value,
    )
    .group_by(_TABLE.c.flavor)
)

_QUEUE_STATE = select(
    _TABLE.c.id, _TABLE.c.status, _TABLE.c.running_since, _TABLE.c.stop_at,
    _TABLE.c.auto_stop, _TABLE.c.requested_at, _TABLE.c.created_at,
).where(
    _TABLE.c.flavor == bindparam("flavor"),
    _TABLE.c.status.in_([s.value for s in HOLDS_RESOURCES | QUEUED]),
)
_QUEUE_STATE_SHARED = _QUEUE_STATE.where(_TABLE.c.pool_id.is_(None))
_QUEUE_STATE_POOL = _QUEUE_STATE.where(_TABLE.c.pool_id == bindparam("pool_id"))

RECENT_RUNS = 50
"""Finished runs of a (pool, flavor) the queue estimates learn from: the most recent
ones, each instance's last run (``last_run_ms``), newest write first."""
_RECENT_RUNS = (
    select(_TABLE.c.last_run_ms)
    .where(_TABLE.c.flavor == bindparam("flavor"), _TABLE.c.last_run_ms.is_not(None))
    .order_by(_TABLE.c.updated_at.desc())
    .limit(RECENT_RUNS)
)
_RECENT_RUNS_SHARED = _RECENT_RUNS.where(_TABLE.c.pool_id.is_(None))
_RECENT_RUNS_POOL = _RECENT_RUNS.where(_TABLE.c.pool_id == bindparam("pool_id"))


def _list_conditions(*, status: bool, show_self: bool, ai_project: bool, pool: bool) -> list[Any]:
    conditions = [
        _TABLE.c.project_id == bindparam("project_id"),
        _TABLE.c.workspace_id == bindparam("workspace_id"),
        _TABLE.c.status == bindparam("status") if status else _LIVE_ACTIVE,
    ]
    if show_self:
        conditions.append(_TABLE.c.user_id == bindparam("user_id"))
    if ai_project:
        conditions.append(_TABLE.c.ai_project_id == bindparam("ai_project"))
    if pool:
        conditions.append(_TABLE.c.pool_id == bindparam("pool_id"))
    return conditions


@functools.cache
def _list_keys(*, status: bool, show_self: bool, ai_project: bool, pool: bool) -> Select[Any]:
    """The sort keys of a list's matches, for each combination of its optional filters:
    built once each (composing a statement costs more than running it on SQLite)."""
    return select(_TABLE.c.id, _TABLE.c.name, _TABLE.c.created_at).where(
        *_list_conditions(status=status, show_self=show_self, ai_project=ai_project, pool=pool))


@functools.cache
def _list_count(*, status: bool, show_self: bool, ai_project: bool, pool: bool) -> Select[Any]:
    return select(func.count()).select_from(_TABLE).where(
        *_list_conditions(status=status, show_self=show_self, ai_project=ai_project, pool=pool))


@functools.cache
def _list_page(
    *, status: bool, show_self: bool, ai_project: bool, pool: bool, by_name: bool,
    descending: bool, limited: bool,
) -> Select[Any]:
    """One page, ordered by the database: the order ``InstanceRepository.list`` gives in
    code, for a database that compares names by code point (``_ORDER_PROBE``)."""
    c = _TABLE.c
    if by_name:
        order = [c.name.desc() if descending else c.name, c.created_at, c.id]
    else:
        order = [c.created_at.desc() if descending else c.created_at, c.id]
    statement = select(_SOURCE).where(
        *_list_conditions(status=status, show_self=show_self, ai_project=ai_project, pool=pool)
    ).order_by(*order).offset(bindparam("offset"))
    return statement.limit(bindparam("limit")) if limited else statement


_ORDER_PROBE = ("a", "B", "b", "Z", "A", "_", "-", "0", "9", "a-b", "a_b", "ab", "aB", "a0")
"""Every kind of character a name or an id may hold (``validation.NAME_RE``): a database
that orders these as Python does orders names by code point, the contract's order.
SQLite always does; PostgreSQL does with the C collation, and its locales do not."""


async def _orders_by_code_point(conn: Reading) -> bool:
    probe = union_all(*(select(literal(v, String).label("x")) for v in _ORDER_PROBE)).subquery()
    ordered = (await conn.execute(select(probe.c.x).order_by(probe.c.x))).scalars().all()
    return list(ordered) == sorted(_ORDER_PROBE)


_WIDTH = len(_TABLE.columns)

_KEY_ID, _KEY_NAME, _KEY_CREATED = (operator.itemgetter(n) for n in range(3))


def _auto_stop_seconds(auto_stop: dict[str, Any] | None) -> int | None:
    """The countdown a run is armed with (§4.4), or None when auto-stop is off."""
    if not auto_stop or not auto_stop.get("enable") or not auto_stop.get("duration"):
        return None
    return int(auto_stop["duration"])


class InstanceRepository:
    """Reads use Core on one pooled connection (the API's hot path: a GET is one
    checkout); writes use ORM sessions."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        catalog: Catalog | None = None,
        inventory: Inventory | None = None,
    ) -> None:
        """``catalog`` gives the capacities; without one every flavor is unlimited
        (slots are still counted). ``inventory``: the host the backend runs instances
        on, whose CPUs, memory and GPUs are counted too; None when something else
        schedules (a cluster)."""
        self._sessions = sessions
        self._engine: AsyncEngine = sessions.kw["bind"]
        self._reads = Reads(self._engine)
        self._catalog = catalog
        self._inventory = inventory
        self._released: list[Callable[[str | None, str], None]] = []
        self.database_orders: bool | None = None
        """Whether the database orders names as the contract does (asked on the first
        list); if not, a list sorts its matches' keys in code."""
        self._appended: list[Callable[[], None]] = []
        self._instances: Memo[str, Instance] = Memo(_decode_source, READ_MEMO_SIZE)
        """Instances of the rows the API read lately: a page's rows mostly come back
        unchanged, and the same values build the same instance (``store/memo.py``)."""

    def on_slot_freed(self, listener: Callable[[str | None, str], None]) -> None:
        """Call ``listener(pool_id, flavor)`` after each committed write that gave a slot
        back, so that the head of that scope's queue can be admitted at once."""
        self._released.append(listener)

    def on_event(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after each committed write that appended an event to the
        log, so that streams of events send it at once."""
        self._appended.append(listener)

    def _events_appended(self) -> None:
        for listener in self._appended:
            listener()

    def capacity_of(self, pool_id: str | None, flavor: str) -> int | None:
        return self._catalog.capacity_of(pool_id, flavor) if self._catalog else None

    # --- reads --------------------------------------------------------------------

    def _from_source(self, source: str) -> Instance:
        """The instance of a ``_SOURCE`` value: the same object for the same values, so
        it is shared by every reader and never changed."""
        return self._instances(source)

    async def load(self, instance_id: str) -> Instance | None:
        async with self._reads.connect() as conn:
            return await _load(conn, instance_id)

    async def get_live(
        self, project_id: str, instance_id: str, owner: str | None = None
    ) -> Instance:
        """A live instance of the project; with ``owner``, only if that user owns it (any
        other instance answers exactly as a missing one, so ids cannot be probed)."""
        async with self._reads.connect() as conn:
            return await _get_live(conn, project_id, instance_id, owner)

    async def view(
        self, project_id: str, instance_id: str, user_id: str, owner: str | None = None
    ) -> tuple[Instance, dict[str, int]]:
        """A live instance and how many live instances of its flavor the caller has.

        One prebuilt query: this is the hot path of every GET.
        """
        params = {"instance_id": instance_id, "project_id": project_id, "user_id": user_id}
        async with self._reads.connect() as conn:
            row = (await conn.execute(_VIEW, params)).first()
        instance = self._from_source(row.source) if row is not None else None
        if instance is None or not _is_live_in(instance, project_id, owner):
            raise errors.InstanceNotFound(instance_id)
        assert row is not None
        return instance, {instance.flavor: int(row.caller_flavor_count)}

    async def list(
        self, project_id: str, query: ListQuery, user_id: str
    ) -> tuple[int, builtins.list[Instance], dict[str, int]]:
        """(total matches, the requested page, the caller's count per flavor)."""
        filters = {
            "status": query.status is not None, "show_self": query.show_self,
            "ai_project": query.ai_project is not None, "pool": query.pool_id is not None,
        }
        params = {
            "project_id": project_id, "workspace_id": query.workspace_id, "user_id": user_id,
            "status": query.status.value if query.status is not None else None,
            "ai_project": query.ai_project, "pool_id": query.pool_id,
        }
        async with self._reads.connect() as conn:
            if self.database_orders is None:
                self.database_orders = await _orders_by_code_point(conn)
            if self.database_orders:
                total, page = await self._page_by_database(conn, query, filters, params)
            else:
                total, page = await self._page_in_code(conn, query, filters, params)
            counts = await _count_by_flavor(conn, project_id, user_id)
        return total, page, counts

    async def _page_by_database(
        self, conn: Reading, query: ListQuery, filters: dict[str, bool],
        params: dict[str, Any],
    ) -> tuple[int, builtins.list[Instance]]:
        """Two statements: the count, and the page itself, ordered, offset and limited
        by the database (the sort keys of every match never leave it)."""
        total = int((await conn.execute(_list_count(**filters), params)).scalar_one())
        statement = _list_page(**filters, by_name=query.sortby == "name",
                               descending=query.descending, limited=bool(query.limit))
        rows = await conn.execute(
            statement, {**params, "offset": query.offset, "limit": query.limit})
        return total, [self._from_source(source) for source in rows.scalars()]

    async def _page_in_code(
        self, conn: Reading, query: ListQuery, filters: dict[str, bool],
        params: dict[str, Any],
    ) -> tuple[int, builtins.list[Instance]]:
        """Every match's sort keys, sorted here, then the page's rows: for a database
        whose collation is not code-point order (PostgreSQL's locales)."""
        keys = list((await conn.execute(_list_keys(**filters), params)).all())
        keys.sort(key=_KEY_ID)
        if query.sortby == "name":
            keys.sort(key=_KEY_CREATED)
            keys.sort(key=_KEY_NAME, reverse=query.descending)
        else:
            keys.sort(key=_KEY_CREATED, reverse=query.descending)
        page = keys[query.offset :]
        if query.limit:
            page = page[: query.limit]
        ids = [k[0] for k in page]
        rows: dict[str, Row[Any]] = {}
        for chunk in _chunks(ids, 500):
            result = await conn.execute(_PAGE, {"ids": list(chunk)})
            rows.update((r.id, r) for r in result)
        return len(keys), [self._from_source(rows[i].source) for i in ids if i in rows]

    async def needing_attention(
        self, *, free_for: str | None = None, now_ms: int = 0
    ) -> builtins.list[Instance]:
        """Every instance the engine must look at on a sweep, in one query; with
        ``free_for`` (a lease owner), only those no other engine holds a live lease on."""
        resting = (
            InstanceStatus.STOPPED.value,
            InstanceStatus.CREATE_FAILED.value,
            InstanceStatus.START_FAILED.value,
            InstanceStatus.RESIZE_FAILED.value,
        )
        query = select(_TABLE).where(
            (InstanceRow.status.not_in(resting) & _LIVE_ACTIVE)
            | InstanceRow.cleanup_pending.is_(True)
            | (InstanceRow.status.in_(resting) & InstanceRow.handle.is_not(None))
        )
        if free_for is not None:
            query = query.where(
                InstanceRow.lease_owner.is_(None)
                | (InstanceRow.lease_owner == free_for)
                | (InstanceRow.lease_until < now_ms)
            )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        found: builtins.list[Instance] = []
        for start in range(0, len(rows), SWEEP_CHUNK):
            if start:
                # Thousands of rows in one go would hold the event loop for tens of
                # milliseconds, and every API request waiting on it with them.
                await asyncio.sleep(0)
            found += [_to_domain(row) for row in rows[start:start + SWEEP_CHUNK]]
        return found

    async def purge_tombstones(self, *, deleted_before_ms: int) -> int:
        """Remove DELETED rows last written before ``deleted_before_ms`` whose backend
        cleanup is done, in one statement; returns how many went."""
        async with self._engine.begin() as conn:
            result = await conn.execute(
                delete(InstanceRow).where(
                    InstanceRow.status == InstanceStatus.DELETED.value,
                    InstanceRow.cleanup_pending.is_(False),
                    InstanceRow.updated_at < deleted_before_ms,
                )
            )
        return int(result.rowcount)

    async def inactive_before(
        self, cutoffs: Mapping[str, int], statuses: Iterable[InstanceStatus], *, limit: int
    ) -> builtins.list[Instance]:
        """Unfrozen instances in one of ``statuses`` last written before their flavor's
        cutoff (``cutoffs``: flavor name -> ms), oldest first, at most ``limit``: the
        candidates of retention (``domain/retention.py`` decides)."""
        if not cutoffs:
            return []
        query = (
            select(_TABLE)
            .where(
                InstanceRow.status.in_([s.value for s in statuses]),
                InstanceRow.frozen.is_(False),
                or_(*(
                    (InstanceRow.flavor == flavor) & (InstanceRow.updated_at < cutoff)
                    for flavor, cutoff in cutoffs.items()
                )),
            )
            .order_by(InstanceRow.updated_at, InstanceRow.id)
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            return [_to_domain(row) for row in await conn.execute(query)]

    async def name_in_use(self, project_id: str, name: str) -> bool:
        async with self._engine.connect() as conn:
            found = await conn.scalar(
                select(InstanceRow.id).where(
                    InstanceRow.project_id == project_id, InstanceRow.live_name == name
                )
            )
            return found is not None

    async def count_live(self, project_id: str, flavor: str | None = None) -> int:
        conditions = [InstanceRow.project_id == project_id, _LIVE_ACTIVE]
        if flavor is not None:
            conditions.append(InstanceRow.flavor == flavor)
        async with self._engine.connect() as conn:
            return int(await conn.scalar(select(func.count()).where(*conditions)) or 0)

    async def slots_used(self, pool_id: str | None, flavor: str) -> int:
        """Instances of ``flavor`` holding resources in the pool (``None``: shared), as
        the scope's counter says."""
        async with self._reads.connect() as conn:
            used = await conn.scalar(
                select(QuotaUsageRow.used).where(
                    QuotaUsageRow.scope == capacity_scope(pool_id, flavor)
                )
            )
            return int(used or 0)

    async def sold_out(self, pool_id: str | None, flavor: str) -> bool:
        """Whether the scope's slots are all taken, or the host cannot fit one more
        instance of the flavor (a read: the take itself decides)."""
        limit = self.capacity_of(pool_id, flavor)
        if limit is not None and await self.slots_used(pool_id, flavor) >= limit:
            return True
        need = self._host_need(flavor)
        if not need or self._inventory is None:
            return False
        async with self._reads.connect() as conn:
            used = await hostfit.used(conn, self._inventory)
        return not fits(need, used, self._inventory.limits())

    def fits_host(self, flavor: str) -> bool:
        """Whether one instance of ``flavor`` fits the host when nothing else runs: a
        flavor that never can is refused rather than queued forever."""
        if self._inventory is None:
            return True
        return fits(self._host_need(flavor), {}, self._inventory.limits())

    def _host_need(self, flavor: str) -> dict[str, int]:
        found = self._catalog.flavors.get(flavor) if self._catalog else None
        if found is None or self._inventory is None:
            return {}
        return amounts(found.resources, self._inventory)

    async def recount_host(self) -> None:
        """Set the host's counters to what the instances holding resources take by the
        current catalog and inventory, and drop GPU assignments nobody holds: at start,
        after an upgrade or a catalog change. Safe while other replicas write."""
        if self._inventory is None:
            return
        async with self._sessions() as session:
            await hostfit.lock(session, self._inventory)
            rows = await session.execute(
                select(InstanceRow.id, InstanceRow.flavor).where(
                    InstanceRow.status.in_([s.value for s in HOLDS_RESOURCES])
                )
            )
            holders = [(r.id, self._host_need(r.flavor)) for r in rows.all()]
            await hostfit.recount(session, self._inventory, holders)
            await session.commit()

    async def queued(
        self, flavor: str, pool_id: str | None = None, *, startable: bool = False
    ) -> builtins.list[str]:
        """Ids of the instances waiting for a slot of ``flavor`` in the pool (``None``:
        the shared pool), first in line first; with ``startable``, only those that may
        be admitted (not frozen)."""
        pool = InstanceRow.pool_id.is_(None) if pool_id is None else InstanceRow.pool_id == pool_id
        conditions = [
            InstanceRow.flavor == flavor,
            pool,
            InstanceRow.status.in_([s.value for s in QUEUED]),
        ]
        if startable:
            conditions.append(InstanceRow.frozen.is_(False))
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(InstanceRow.id, InstanceRow.requested_at, InstanceRow.created_at).where(
                        *conditions
                    )
                )
            ).all()
        rows = sorted(rows, key=lambda r: (r.requested_at or r.created_at, r.id))
        return [r.id for r in rows]

    async def queue_state(
        self, flavor: str, pool_id: str | None = None
    ) -> tuple[builtins.list[Holder], builtins.list[Waiter], builtins.list[int]]:
        """The instances holding ``flavor``'s slots in the pool (``None``: shared), its
        queue there (first in line first, as ``queued`` orders it) and the lengths in
        seconds of its recent finished runs (at most ``RECENT_RUNS``), on one connection:
        what ``domain.queueing`` estimates from."""
        params: dict[str, str] = {"flavor": flavor}
        if pool_id is None:
            query, runs_query = _QUEUE_STATE_SHARED, _RECENT_RUNS_SHARED
        else:
            query, runs_query = _QUEUE_STATE_POOL, _RECENT_RUNS_POOL
            params["pool_id"] = pool_id
        async with self._reads.connect() as conn:
            rows = (await conn.execute(query, params)).all()
            runs = [int(ms) // 1000 for ms in (await conn.execute(runs_query, params)).scalars()]
        holders: builtins.list[Holder] = []
        waiting = []
        for r in rows:
            status = InstanceStatus(r.status)
            auto_stop = _auto_stop_seconds(r.auto_stop)
            if status in QUEUED:
                waiting.append(((r.requested_at or r.created_at, r.id), auto_stop))
            else:
                holders.append(Holder(status, r.running_since, r.stop_at, auto_stop))
        waiting.sort()
        queue = [Waiter(id_, at, auto_stop) for (at, id_), auto_stop in waiting]
        return holders, queue, runs

    async def count_by_flavor(self, project_id: str, user_id: str) -> dict[str, int]:
        async with self._reads.connect() as conn:
            return await _count_by_flavor(conn, project_id, user_id)

    # --- writes -------------------------------------------------------------------

    async def add(
        self,
        instance: Instance,
        *,
        project_quota: int,
        flavor_quota: int | None,
        actor: str = events.ENGINE,
    ) -> Instance:
        """Insert ``instance`` if its project is under both quotas, its name is free and,
        when it is inserted holding resources (``CREATING``), a slot of its flavor is.

        Each quota and the slot is one conditional UPDATE of a counter row, in the same
        transaction as the insert: the row lock makes two creates racing on two API
        replicas queue behind each other on PostgreSQL, and SQLite runs one writer at a
        time. Quotas before capacity, always: every writer takes the counters in that
        order, so two of them never wait for each other's.
        """
        async with self._sessions() as session:
            if not await _take(session, _project_scope(instance), project_quota):
                raise errors.InstanceQuotaReached(project_quota)
            # Read under the counter's lock, which a freeze of the project takes too: a
            # freeze either sees this instance or this create sees the freeze.
            if await session.scalar(_PROJECT_FROZEN, {"project_id": instance.project_id}):
                raise errors.ProjectFrozen(instance.project_id)
            # Counted even without a quota, so that a quota the catalog adds later
            # starts from the true number.
            limit = flavor_quota if flavor_quota is not None else _UNLIMITED
            if not await _take(session, _flavor_scope(instance), limit):
                raise errors.FlavorQuotaReached(instance.flavor, limit)
            if instance.status in HOLDS_RESOURCES:
                taken = await self._take_slot(session, instance, instance.created_at)
                if taken is None:
                    raise errors.FlavorSoldOut(instance.flavor)
                instance = instance.evolve(gpus=taken or None)
            session.add(_to_row(instance))
            try:
                await session.flush()
            except IntegrityError as exc:
                raise errors.NameTaken(instance.name) from exc
            at = instance.created_at
            await event_log.append(session, instance, events.created(instance, actor), at)
            if instance.status in QUEUED:
                rank = await _rank(session, instance)
                await event_log.append(session, instance, events.queued(actor, rank), at)
            try:
                await session.commit()
            except IntegrityError as exc:
                raise errors.NameTaken(instance.name) from exc
        self._events_appended()
        return instance

    async def record(self, instance: Instance, draft: EventDraft, *, now_ms: int) -> None:
        """Append an event that goes with no write of the instance."""
        async with self._sessions() as session:
            await event_log.append(session, instance, draft, now_ms)
            await session.commit()
        self._events_appended()

    async def transition(
        self, instance: Instance, target: InstanceStatus, *, now_ms: int, **changes: Any
    ) -> Instance:
        """Move ``instance`` to ``target`` (checked against the lifecycle table)."""
        ensure_transition(instance.status, target)
        return await self.save(instance, now_ms=now_ms, status=target, **changes)

    async def save(
        self,
        instance: Instance,
        *,
        now_ms: int,
        fence: str | None = None,
        actor: str = events.ENGINE,
        event: EventDraft | None = None,
        touch: bool = True,
        **changes: Any,
    ) -> Instance:
        """Write ``changes`` if nobody wrote the row since ``instance`` was read.

        ``touch=False`` keeps ``updated_at`` (the wire's ``latest_update_timestamp``): for
        the engine's own bookkeeping, which changes nothing a caller set or sees.

        With ``fence`` (the engine's lease owner name), also only while that engine
        holds the instance's lease: a replica that lost it cannot write, and learns so
        from ``LeaseLost`` rather than ``ConcurrentUpdate``.

        A write that makes the instance hold resources takes a slot of its scope in the
        same transaction (``NotEnoughResources``, and nothing written, when none is
        free); one that makes it stop holding them gives the slot back.

        A status write appends its event (``domain/events.py``, by ``actor``) in the
        same transaction, as does a write given an ``event``: the event exists exactly
        when the change does. A failure's ``failed_reasons.detail`` names its event.
        """
        new = instance.evolve(
            version=instance.version + 1,
            updated_at=now_ms if touch else instance.updated_at,
            **changes,
        )
        if new.status is not InstanceStatus.RUNNING and new.endpoint is not None:
            new = new.evolve(endpoint=None)  # only a running workload may be reached
        new = _run_records(instance, new, now_ms)
        values = _row_values(new)
        released = (
            instance.status is not InstanceStatus.DELETED
            and new.status is InstanceStatus.DELETED
        )
        was_holding = instance.status in HOLDS_RESOURCES
        holds = new.status in HOLDS_RESOURCES
        if was_holding and not holds:
            new = new.evolve(gpus=None)
            values["gpus"] = None
        async with self._sessions() as session:
            draft = event
            if draft is None and new.status is not instance.status:
                draft = await _transition_event(session, instance, new, actor, now_ms)
            statement = update(InstanceRow).where(
                InstanceRow.id == instance.id, InstanceRow.version == instance.version
            )
            if fence is not None:
                statement = statement.where(InstanceRow.lease_owner == fence)
            result = await session.execute(statement.values(**values))
            if result.rowcount != 1:  # type: ignore[attr-defined]
                await session.rollback()
                fenced_out = (
                    fence is not None
                    and await _version_of(session, instance.id) == instance.version
                )
                if fenced_out:
                    raise errors.LeaseLost(f"instance {instance.id} is no longer ours")
                raise errors.ConcurrentUpdate(f"instance {instance.id} changed meanwhile")
            if released:  # a deleted instance no longer counts against its quotas
                for scope in (_project_scope(instance), _flavor_scope(instance)):
                    await session.execute(_RELEASE, {"quota_scope": scope})
            if holds and not was_holding:
                taken = await self._take_slot(session, new, now_ms)
                if taken is None:
                    await session.rollback()
                    raise errors.NotEnoughResources(instance.flavor)
                if taken:
                    new = new.evolve(gpus=taken)
                    await session.execute(
                        update(InstanceRow)
                        .where(InstanceRow.id == instance.id)
                        .values(gpus=list(taken))
                    )
            if was_holding and not holds:
                scope = capacity_scope(instance.pool_id, instance.flavor)
                await session.execute(_RELEASE, {"quota_scope": scope})
                await self._give_back_host(session, instance)
            if draft is not None:
                # Last: the event log's lock is held only from here to the commit.
                new = await self._append(session, new, draft, now_ms)
            await session.commit()
        if draft is not None:
            self._events_appended()
        if was_holding and not holds:
            for pool_id, flavor in self._freed_scopes(instance):
                for listener in self._released:
                    listener(pool_id, flavor)
        return new

    async def _append(
        self, session: AsyncSession, new: Instance, draft: EventDraft, now_ms: int
    ) -> Instance:
        """Append the write's event; a failure it explains names it (``detail.event_id``)."""
        event_id = await event_log.append(session, new, draft, now_ms)
        if draft.kind not in events.EXPLAINS_FAILURE or new.failed is None:
            return new
        failed = replace(
            new.failed, detail={**new.failed.detail, events.FAILURE_DETAIL_KEY: str(event_id)}
        )
        await session.execute(
            update(InstanceRow)
            .where(InstanceRow.id == new.id)
            .values(failed=_failed_to_json(failed))
        )
        return new.evolve(failed=failed)

    def _freed_scopes(self, instance: Instance) -> builtins.list[tuple[str | None, str]]:
        """The scopes whose queue may move now that ``instance`` stopped holding: its own,
        and when it gave host resources back, every scope of a flavor that needs them
        (a GPU another flavor frees is as good as one of its own)."""
        own = (instance.pool_id, instance.flavor)
        if self._catalog is None or not self._host_need(instance.flavor):
            return [own]
        pools: builtins.list[str | None] = [None, *self._catalog.pools]
        others = [(pool, name) for name, flavor in self._catalog.flavors.items()
                  if flavor.free and self._host_need(name) for pool in pools]
        return [own, *(scope for scope in others if scope != own)]

    async def _take_slot(
        self, session: AsyncSession, instance: Instance, now_ms: int
    ) -> tuple[str, ...] | None:
        """Take the instance's slot, then its share of the host; None when either is
        not free (the caller rolls back), else the GPUs assigned to it (maybe none)."""
        # Counted even without a capacity, so that one the catalog sets later starts
        # from the true number.
        limit = self.capacity_of(instance.pool_id, instance.flavor)
        scope = capacity_scope(instance.pool_id, instance.flavor)
        if not await _take(session, scope, _UNLIMITED if limit is None else limit):
            return None
        need = self._host_need(instance.flavor)
        if self._inventory is None or not need:
            return ()
        if not await hostfit.take(session, self._inventory, need):
            return None
        if not need.get(GPUS):
            return ()
        picked = await hostfit.assign_gpus(
            session, self._inventory, instance.id, need[GPUS], now_ms
        )
        return picked or None

    async def _give_back_host(self, session: AsyncSession, instance: Instance) -> None:
        if self._inventory is None:
            return
        await hostfit.give_back(session, self._inventory, self._host_need(instance.flavor))
        if self._inventory.assigns_gpus:
            await hostfit.release_gpus(session, instance.id)


async def _transition_event(
    session: AsyncSession, before: Instance, after: Instance, actor: str, now_ms: int
) -> EventDraft | None:
    if before.status is InstanceStatus.STOPPING and after.status is InstanceStatus.STOPPED:
        # Stopped on whose word: the stop request's, which the engine only carries out.
        asked = await event_log.last_of_kind(session, before.id, events.EventKind.STOP_REQUESTED)
        if asked is None:
            return events.stopped(actor, "stop")
        return events.stopped(asked.actor, str(asked.detail.get("reason", "stop")))
    rank = await _rank(session, after) if after.status in QUEUED else None
    return events.for_transition(before, after, actor=actor, now_ms=now_ms, rank=rank)


async def _rank(session: AsyncSession, instance: Instance) -> int:
    """The instance's place in its (pool, flavor) queue, 1 first, as ``queued`` orders."""
    since = instance.requested_at or instance.created_at
    pool = (
        InstanceRow.pool_id.is_(None)
        if instance.pool_id is None
        else InstanceRow.pool_id == instance.pool_id
    )
    ahead = await session.scalar(
        select(func.count()).where(
            InstanceRow.flavor == instance.flavor,
            pool,
            InstanceRow.status.in_([s.value for s in QUEUED]),
            InstanceRow.id != instance.id,
            func.coalesce(InstanceRow.requested_at, InstanceRow.created_at) <= since,
        )
    )
    return int(ahead or 0) + 1


def _failed_to_json(failed: FailedReason | None) -> dict[str, Any] | None:
    if failed is None:
        return None
    return {"code": failed.code, "message": failed.message, "detail": dict(failed.detail)}


def _run_records(before: Instance, after: Instance, now_ms: int) -> Instance:
    """What a status write records about runs, whichever path made it: leaving RUNNING
    (a stop, an auto-stop, a restart, a fault) keeps the run's length for the queue
    estimates; giving the slot back ends its reservation."""
    if (
        before.status is InstanceStatus.RUNNING
        and after.status is not InstanceStatus.RUNNING
        and before.running_since is not None
    ):
        after = after.evolve(last_run_ms=max(0, now_ms - before.running_since))
    if after.status not in HOLDS_RESOURCES and after.reserved_at is not None:
        after = after.evolve(reserved_at=None)
    return after


async def _version_of(session: AsyncSession, instance_id: str) -> int | None:
    return await session.scalar(select(InstanceRow.version).where(InstanceRow.id == instance_id))


async def _load(conn: Reading, instance_id: str) -> Instance | None:
    row = (await conn.execute(_LOAD, {"instance_id": instance_id})).first()
    return _to_domain(row) if row is not None else None


async def _get_live(
    conn: Reading, project_id: str, instance_id: str, owner: str | None
) -> Instance:
    instance = await _load(conn, instance_id)
    if instance is None or not _is_live_in(instance, project_id, owner):
        raise errors.InstanceNotFound(instance_id)
    return instance


def _is_live_in(instance: Instance, project_id: str, owner: str | None = None) -> bool:
    return (
        instance.project_id == project_id
        and instance.status is not InstanceStatus.DELETED
        and (owner is None or instance.user_id == owner)
    )


_UNLIMITED = 2**31 - 1

_PROJECT_FROZEN = select(ProjectRow.frozen).where(
    ProjectRow.project_id == bindparam("project_id")
)

_TAKE = (
    update(QuotaUsageRow)
    .where(QuotaUsageRow.scope == bindparam("quota_scope"), QuotaUsageRow.used < bindparam("limit"))
    .values(used=QuotaUsageRow.used + 1)
)
_RELEASE = (
    update(QuotaUsageRow)
    .where(QuotaUsageRow.scope == bindparam("quota_scope"), QuotaUsageRow.used > 0)
    .values(used=QuotaUsageRow.used - 1)
)


def _project_scope(instance: Instance) -> str:
    return project_scope(instance.project_id)


def project_scope(project_id: str) -> str:
    """The counter of a project's live instances (its quota); a freeze of the project
    takes its lock too (``store/projects.py``)."""
    return f"project:{project_id}"


def _flavor_scope(instance: Instance) -> str:
    return f"flavor:{instance.project_id}:{instance.flavor}"


def capacity_scope(pool_id: str | None, flavor: str) -> str:
    """The counter of instances holding resources: per pool (empty: the shared one) and
    flavor, across projects. Migration 0007 spells the same form."""
    return f"capacity:{pool_id or ''}:{flavor}"


async def _take(session: AsyncSession, scope: str, limit: int) -> bool:
    """Count one more live instance in ``scope`` unless that would pass ``limit``."""
    result = await session.execute(_TAKE, {"quota_scope": scope, "limit": limit})
    if result.rowcount == 1:  # type: ignore[attr-defined]
        return True
    # No counter yet (a new scope): create it; a concurrent creator may win the race,
    # which the savepoint absorbs. Then try once more under the row lock.
    try:
        async with session.begin_nested():
            session.add(QuotaUsageRow(scope=scope, used=0))
    except IntegrityError:
        pass
    result = await session.execute(_TAKE, {"quota_scope": scope, "limit": limit})
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


async def _count_by_flavor(conn: Reading, project_id: str, user_id: str) -> dict[str, int]:
    rows = await conn.execute(_COUNT_BY_FLAVOR, {"project_id": project_id, "user_id": user_id})
    return {flavor: int(n) for flavor, n in rows.all()}


def _chunks(items: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _storage_to_json(storage: Storage) -> dict[str, Any]:
    return {"type": storage.type, "location": asdict(storage.location)}


def _storage_from_json(data: dict[str, Any]) -> Storage:
    location = data.get("location")
    return Storage(type=data["type"], location=Location(**location) if location else Location())


def _endpoint_to_json(endpoint: Endpoint | None) -> dict[str, Any] | None:
    if endpoint is None:
        return None
    return {"host": endpoint.host, "port": endpoint.port, "base_path": endpoint.base_path,
            "headers": dict(endpoint.headers)}


def _endpoint_from_json(data: dict[str, Any] | None) -> Endpoint | None:
    if not data:
        return None
    return Endpoint(host=str(data["host"]), port=int(data["port"]),
                    base_path=str(data["base_path"]), headers=dict(data.get("headers") or {}))


def _row_values(instance: Instance) -> dict[str, Any]:
    return {
        "id": instance.id,
        "project_id": instance.project_id,
        "name": instance.name,
        "live_name": None if instance.status is InstanceStatus.DELETED else instance.name,
        "description": instance.description,
        "profile_id": instance.profile_id,
        "flavor": instance.flavor,
        "storage": _storage_to_json(instance.storage),
        "extend_storage": None
        if instance.extend_storage is None
        else [_storage_to_json(s) for s in instance.extend_storage],
        "auto_stop": asdict(instance.auto_stop),
        "annotations": dict(instance.annotations),
        "workspace_id": instance.workspace_id,
        "pool_id": instance.pool_id,
        "ai_project_id": instance.ai_project_id,
        "user_id": instance.user_id,
        "user_name": instance.user_name,
        "status": instance.status.value,
        "desired": instance.desired,
        "created_at": instance.created_at,
        "updated_at": instance.updated_at,
        "version": instance.version,
        "running_since": instance.running_since,
        "stop_at": instance.stop_at,
        "requested_at": instance.requested_at,
        "failed": _failed_to_json(instance.failed),
        "handle": None if instance.handle is None else dict(instance.handle),
        "endpoint": _endpoint_to_json(instance.endpoint),
        "cleanup_pending": instance.cleanup_pending,
        "frozen": instance.frozen,
        "reserved_at": instance.reserved_at,
        "gpus": None if instance.gpus is None else list(instance.gpus),
        "last_run_ms": instance.last_run_ms,
        "extended_ms": instance.extended_ms,
        "warned_for": instance.warned_for,
    }


def _to_row(instance: Instance) -> InstanceRow:
    return InstanceRow(**_row_values(instance))


_STATUSES = {s.value: s for s in InstanceStatus}
"""Status text to member: a dict lookup, cheaper than calling the enum per row."""

_COLUMNS = (
    "id", "project_id", "name", "live_name", "description", "profile_id", "flavor",
    "storage", "extend_storage", "auto_stop", "annotations", "workspace_id", "pool_id",
    "ai_project_id", "user_id", "user_name", "status", "desired", "created_at",
    "updated_at", "version", "running_since", "stop_at", "requested_at", "failed",
    "handle", "endpoint", "cleanup_pending", "frozen", "lease_owner", "lease_until",
    "reserved_at", "gpus", "last_run_ms", "extended_ms", "warned_for",
)
"""The table's columns in the order ``_to_domain`` unpacks a row of ``select(_TABLE)``."""
if tuple(c.key for c in _TABLE.columns) != _COLUMNS:
    raise RuntimeError("instances: the table's columns changed; update _COLUMNS and _to_domain")


def _to_domain(row: Sequence[Any]) -> Instance:
    """The domain object of a row of ``select(_TABLE, ...)`` (columns past the table's
    are ignored). Unpacked by position: reading 36 columns by name was a fifth of a
    list request. Its JSON columns are freshly decoded for this row (with orjson,
    ``store/database.py``), so they are used without a copy."""
    (id_, project_id, name, _live_name, description, profile_id, flavor, storage,
     extend_storage, auto_stop, annotations, workspace_id, pool_id, ai_project_id, user_id,
     user_name, status, desired, created_at, updated_at, version, running_since, stop_at,
     requested_at, failed, handle, endpoint, cleanup_pending, frozen, _lease_owner,
     _lease_until, reserved_at, gpus, last_run_ms, extended_ms, warned_for,
     ) = row[:_WIDTH]
    return Instance(
        id=InstanceId(id_),
        project_id=ProjectId(project_id),
        name=name,
        description=description,
        profile_id=profile_id,
        flavor=flavor,
        storage=_storage_from_json(storage),
        extend_storage=None
        if extend_storage is None
        else tuple(_storage_from_json(s) for s in extend_storage),
        auto_stop=AutoStop(**auto_stop),
        annotations=annotations,
        workspace_id=workspace_id,
        pool_id=pool_id,
        ai_project_id=ai_project_id,
        user_id=UserId(user_id),
        user_name=user_name,
        status=_STATUSES[status],
        desired=desired,
        created_at=created_at,
        updated_at=updated_at,
        version=version,
        running_since=running_since,
        stop_at=stop_at,
        requested_at=requested_at,
        failed=None if failed is None else FailedReason(**failed),
        handle=handle,
        endpoint=_endpoint_from_json(endpoint),
        cleanup_pending=cleanup_pending,
        frozen=frozen,
        reserved_at=reserved_at,
        gpus=None if gpus is None else tuple(gpus),
        last_run_ms=last_run_ms,
        extended_ms=extended_ms or 0,
        warned_for=warned_for,
    )


_SOURCE_AT = tuple(n for n, c in enumerate(_TABLE.columns) if c.key not in _UNREAD)
_BOOLEAN_AT = tuple(n for n, c in enumerate(_TABLE.columns) if isinstance(c.type, Boolean))


def _decode_source(source: str) -> Instance:
    """The instance of a ``_SOURCE`` value. Its JSON columns come decoded with it;
    SQLite's booleans come as 0 and 1."""
    values: list[Any] = [None] * _WIDTH
    for n, value in zip(_SOURCE_AT, orjson.loads(source), strict=True):
        values[n] = value
    for n in _BOOLEAN_AT:
        values[n] = bool(values[n])
    return _to_domain(values)
