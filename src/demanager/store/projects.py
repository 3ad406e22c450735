"""Per-project settings an operator changes (``demanager projects``): the instance
quota and the frozen flag.

A project has a row only once an operator set something; without one it has the
server's defaults. Freezing a project also sets the flag of each of its live
instances, in the same transaction, so that the instance's flag is the single thing
the API's actions and the engine's admission read (``domain/tenancy.py``).

A freeze and a create of the same project must not interleave so that the new
instance escapes the freeze. Both take the project's quota counter row
(``quota_usage``, ``project:{id}``): a create takes it first and reads the frozen
flag after (``InstanceRepository.add``); a freeze takes it after locking the
instances it freezes, then freezes any instance a create committed meanwhile, then
writes the project row. Either the create commits first and is frozen with the
others, or it reads the freeze and is refused. Instance rows before the counter is
the order a delete takes them in, so the two never wait for each other's.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from demanager import errors
from demanager.domain.lifecycle import InstanceStatus
from demanager.domain.tenancy import ProjectSettings
from demanager.store.instances import project_scope
from demanager.store.tables import InstanceRow, ProjectRow, QuotaUsageRow

_LIVE = InstanceRow.status != InstanceStatus.DELETED.value


@dataclass(frozen=True)
class ProjectState:
    """A project as ``projects list`` shows it."""

    settings: ProjectSettings
    live: int
    """Live (not deleted) instances."""
    frozen_instances: int
    """Live instances whose own flag is set."""


class ProjectRepository:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def get(self, project_id: str) -> ProjectSettings | None:
        async with self._sessions() as session:
            row = await session.get(ProjectRow, project_id)
            return _to_domain(row) if row is not None else None

    async def list(self) -> builtins.list[ProjectState]:
        """Every project with settings or live instances, by id."""
        frozen = func.sum(case((InstanceRow.frozen.is_(True), 1), else_=0))
        async with self._sessions() as session:
            rows = {r.project_id: _to_domain(r) for r in await session.scalars(select(ProjectRow))}
            counts = {
                r.project_id: (int(r.live), int(r.frozen or 0))
                for r in await session.execute(
                    select(
                        InstanceRow.project_id,
                        func.count().label("live"),
                        frozen.label("frozen"),
                    )
                    .where(_LIVE)
                    .group_by(InstanceRow.project_id)
                )
            }
        return [
            ProjectState(rows.get(p) or ProjectSettings(p), *counts.get(p, (0, 0)))
            for p in sorted(set(rows) | set(counts))
        ]

    async def live_statuses(self, project_id: str) -> dict[str, InstanceStatus]:
        """Each live instance of the project and its status."""
        async with self._sessions() as session:
            rows = await session.execute(
                select(InstanceRow.id, InstanceRow.status).where(
                    InstanceRow.project_id == project_id, _LIVE
                )
            )
            return {r.id: InstanceStatus(r.status) for r in rows}

    async def project_of(self, instance_id: str) -> str:
        """The project of a live instance (``InstanceNotFound`` if there is none)."""
        async with self._sessions() as session:
            found = await session.scalar(
                select(InstanceRow.project_id).where(InstanceRow.id == instance_id, _LIVE)
            )
        if found is None:
            raise errors.InstanceNotFound(instance_id)
        return found

    async def set_quota(self, project_id: str, quota: int | None, *, now_ms: int) -> None:
        """Set the project's instance quota; ``None``: back to the server's default.

        Live instances beyond a lowered quota are kept; new ones are refused (6302)
        until the project is under it again.
        """
        async with self._sessions() as session:
            await _upsert(session, project_id, now_ms, instance_quota=quota)
            await session.commit()

    async def freeze(self, project_id: str, *, now_ms: int) -> int:
        """Freeze the project and each of its live instances; returns how many instances
        this froze (those already frozen are not counted)."""
        async with self._sessions() as session:
            frozen = await _set_live_frozen(session, project_id, True, now_ms)
            await _lock_counter(session, project_scope(project_id))
            # Instances whose create committed while the counter was being waited for.
            frozen += await _set_live_frozen(session, project_id, True, now_ms)
            await _upsert(session, project_id, now_ms, frozen=True)
            await session.commit()
        return frozen

    async def unfreeze(self, project_id: str, *, now_ms: int) -> int:
        """Thaw the project and every live instance of it, also those frozen one by one;
        returns how many instances this thawed."""
        async with self._sessions() as session:
            thawed = await _set_live_frozen(session, project_id, False, now_ms)
            await _upsert(session, project_id, now_ms, frozen=False)
            await session.commit()
        return thawed

    async def set_instance_frozen(self, instance_id: str, frozen: bool, *, now_ms: int) -> bool:
        """Freeze or thaw one live instance; False when it already was so.

        ``InstanceNotFound`` when there is no such live instance; thawing one of a
        frozen project raises ``ProjectFrozen``: the project's freeze covers it.
        """
        async with self._sessions() as session:
            project_id = await session.scalar(
                select(InstanceRow.project_id).where(InstanceRow.id == instance_id, _LIVE)
            )
            if project_id is None:
                raise errors.InstanceNotFound(instance_id)
            project = await session.get(ProjectRow, project_id)
            if not frozen and project is not None and project.frozen:
                raise errors.ProjectFrozen(project_id)
            result = await session.execute(
                _frozen_update(frozen, now_ms).where(InstanceRow.id == instance_id, _LIVE)
            )
            await session.commit()
        return bool(result.rowcount)  # type: ignore[attr-defined]


def _frozen_update(frozen: bool, now_ms: int) -> Any:
    """Set the flag where it differs, as a write of the row: the version moves, so an
    action or an admission that read the row before loses its race and reads again."""
    return (
        update(InstanceRow)
        .where(InstanceRow.frozen.is_(not frozen))
        .values(frozen=frozen, version=InstanceRow.version + 1, updated_at=now_ms)
    )


async def _set_live_frozen(
    session: AsyncSession, project_id: str, frozen: bool, now_ms: int
) -> int:
    result = await session.execute(
        _frozen_update(frozen, now_ms).where(InstanceRow.project_id == project_id, _LIVE)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def _lock_counter(session: AsyncSession, scope: str) -> None:
    """Hold the counter row's lock until the transaction ends (creating the row first if
    the project never had an instance)."""
    touch = update(QuotaUsageRow).where(QuotaUsageRow.scope == scope).values(
        used=QuotaUsageRow.used
    )
    if (await session.execute(touch)).rowcount:  # type: ignore[attr-defined]
        return
    try:
        async with session.begin_nested():
            session.add(QuotaUsageRow(scope=scope, used=0))
    except IntegrityError:
        pass  # a concurrent create made it: take its lock below
    await session.execute(touch)


async def _upsert(session: AsyncSession, project_id: str, now_ms: int, **values: Any) -> None:
    row = await session.get(ProjectRow, project_id)
    if row is None:
        try:
            async with session.begin_nested():
                session.add(ProjectRow(project_id=project_id, updated_at=now_ms,
                                       **{"instance_quota": None, "frozen": False, **values}))
            return
        except IntegrityError:  # another operator command made the row meanwhile
            row = await session.get(ProjectRow, project_id, populate_existing=True)
            assert row is not None
    for key, value in values.items():
        setattr(row, key, value)
    row.updated_at = now_ms


def _to_domain(row: ProjectRow) -> ProjectSettings:
    return ProjectSettings(
        project_id=row.project_id,
        instance_quota=row.instance_quota,
        frozen=bool(row.frozen),
        updated_at=row.updated_at,
    )
