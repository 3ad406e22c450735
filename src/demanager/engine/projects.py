"""The operator's use cases on projects (``demanager projects``): quotas and freezing.

A freeze stops nothing by itself: what runs goes on running, and only what would
take resources again is refused (6326). Asked to, it also stops the running
instances, each through the caller's own ``stop`` (``InstanceService.act``): the
same intent, written the same way, that the engine then carries out.
"""

from __future__ import annotations

from dataclasses import dataclass

from demanager import errors
from demanager.domain.lifecycle import InstanceStatus as S
from demanager.engine.clock import Clock
from demanager.engine.service import InstanceService
from demanager.identity.principal import Principal, Role
from demanager.store.projects import ProjectRepository, ProjectState

STOPPABLE = frozenset({S.RUNNING, S.UNAVAILABLE})
"""What ``stop`` accepts (§4.3)."""
UNDER_WAY = frozenset({S.CREATING, S.STARTING, S.RESTARTING})
"""Being brought up: ``stop`` refuses these until they run (6306, 6357). A frozen
instance's reservation (READY_TO_START) is not among them: the engine lets it lapse."""


@dataclass(frozen=True)
class Frozen:
    """What a freeze did."""

    frozen: int
    """Instances whose flag it set (those already frozen are not counted)."""
    stopping: int = 0
    """Running instances it asked to stop."""
    under_way: int = 0
    """Instances still being brought up, which it could not stop yet."""


class ProjectAdmin:
    def __init__(
        self,
        *,
        projects: ProjectRepository,
        service: InstanceService,
        clock: Clock,
        default_quota: int,
    ) -> None:
        self._projects = projects
        self._service = service
        self._clock = clock
        self.default_quota = default_quota

    async def list(self) -> list[ProjectState]:
        return await self._projects.list()

    async def set_quota(self, project_id: str, quota: int | None) -> None:
        await self._projects.set_quota(project_id, quota, now_ms=self._clock.now_ms())

    async def freeze(self, project_id: str, *, stop: bool = False) -> Frozen:
        frozen = await self._projects.freeze(project_id, now_ms=self._clock.now_ms())
        if not stop:
            return Frozen(frozen)
        return await self._stop(project_id, frozen, None)

    async def unfreeze(self, project_id: str) -> int:
        return await self._projects.unfreeze(project_id, now_ms=self._clock.now_ms())

    async def freeze_instance(self, instance_id: str, *, stop: bool = False) -> Frozen:
        changed = await self._projects.set_instance_frozen(
            instance_id, True, now_ms=self._clock.now_ms()
        )
        if not stop:
            return Frozen(int(changed))
        project_id = await self._projects.project_of(instance_id)
        return await self._stop(project_id, int(changed), instance_id)

    async def unfreeze_instance(self, instance_id: str) -> bool:
        return await self._projects.set_instance_frozen(
            instance_id, False, now_ms=self._clock.now_ms()
        )

    async def _stop(self, project_id: str, frozen: int, only: str | None) -> Frozen:
        """Ask the project's running instances (or only ``only``) to stop."""
        principal = Principal("", "operator", project_id, Role.ADMIN, operator=True)
        stopping = under_way = 0
        statuses = await self._projects.live_statuses(project_id)
        for instance_id, status in statuses.items():
            if only is not None and instance_id != only:
                continue
            if status in UNDER_WAY:
                under_way += 1
            if status not in STOPPABLE:
                continue
            try:
                await self._service.act(
                    principal=principal, instance_id=instance_id, body={"action": "stop"}
                )
            except (errors.StateError, errors.InstanceNotFound):
                continue  # it changed meanwhile: stopped or deleted by its owner
            stopping += 1
        return Frozen(frozen, stopping, under_way)
