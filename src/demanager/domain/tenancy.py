"""What an operator sets for a project, and the rules that follow from it.

A project has no row until an operator changes something: its quota is then the
server's default and it is not frozen. Frozen (contract §4.1) is a flag, never a
status: a frozen instance keeps its status and refuses only what would make it
take resources again. Freezing a project freezes each of its live instances, so the
instance's own flag is the one thing every check reads (the actions here, the
engine's admission in ``planning``, retention).
"""

from __future__ import annotations

from dataclasses import dataclass

from demanager import errors
from demanager.domain.lifecycle import InstanceStatus, Operation


@dataclass(frozen=True)
class ProjectSettings:
    project_id: str
    instance_quota: int | None = None
    """Live instances the project may have; ``None``: the server's default."""
    frozen: bool = False
    updated_at: int = 0


def instance_quota(settings: ProjectSettings | None, default: int) -> int:
    """The live instances a project may have (6302 beyond)."""
    if settings is None or settings.instance_quota is None:
        return default
    return settings.instance_quota


FROZEN_REFUSES: frozenset[Operation] = frozenset(
    {Operation.START, Operation.RESTART, Operation.QUEUE}
)
"""What a frozen instance answers 6326 to (§4.3): whatever would bring it up again.
Stop, dequeue, delete and PUT stay allowed, so a frozen instance can always be put to
rest and its owner can still remove it."""


def ensure_not_frozen(frozen: bool, status: InstanceStatus, operation: Operation) -> None:
    if frozen and operation in FROZEN_REFUSES:
        raise errors.InstanceFrozen(status, operation)


def ensure_project_open(settings: ProjectSettings | None) -> None:
    """A frozen project takes no new instance (6326)."""
    if settings is not None and settings.frozen:
        raise errors.ProjectFrozen(settings.project_id)
