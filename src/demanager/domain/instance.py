"""An instance and its parts, as the domain sees them (no wire or table shapes)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, NewType

from demanager.domain.lifecycle import InstanceStatus

InstanceId = NewType("InstanceId", str)
ProjectId = NewType("ProjectId", str)
UserId = NewType("UserId", str)

#: Where the primary storage appears inside the environment (contract §2.1).
WORK_DIR = "/home/ma-user/work"
DEFAULT_VOLUME_GB = 5
MIN_VOLUME_GB = 5
MAX_VOLUME_GB = 4096
MIN_AUTO_STOP_S = 3600
MAX_AUTO_STOP_S = 86400


def new_instance_id() -> InstanceId:
    """``DE-`` + a version-1 UUID whose node field is random, not the host's MAC."""
    return InstanceId(f"DE-{uuid.uuid1(node=uuid.uuid4().int & (1 << 48) - 1 | 1 << 40)}")


@dataclass(frozen=True, slots=True)
class Location:
    path: str | None = None
    volume_size: int | None = None
    mount_path: str | None = None
    access_modes: str | None = None


@dataclass(frozen=True, slots=True)
class Storage:
    type: str
    location: Location = field(default_factory=Location)


@dataclass(frozen=True, slots=True)
class AutoStop:
    enable: bool = False
    duration: int | None = None
    prompt: bool = True


@dataclass(frozen=True, slots=True)
class FailedReason:
    code: str
    message: str
    detail: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where the proxy reaches a running workload, as the backend reported it.

    ``headers`` carry the upstream credential the proxy adds to every request (for
    Jupyter, ``Authorization: token …``); callers never see them.
    """

    host: str
    port: int
    base_path: str
    """The path the notebook server is rooted at, with a trailing slash."""
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Owner:
    user_id: UserId
    user_name: str
    project_id: ProjectId


@dataclass(frozen=True)
class CreateRequest:
    """A create request that passed every check that needs no store access."""

    name: str
    description: str
    profile_id: str
    flavor: str
    storage: Storage
    extend_storage: tuple[Storage, ...] | None
    auto_stop: AutoStop
    annotations: Mapping[str, str]
    workspace_id: str
    pool_id: str | None
    ai_project_id: str


@dataclass(frozen=True)
class UpdateRequest:
    """What a PUT changes; ``None`` = leave as is."""

    description: str | None = None
    auto_stop: AutoStop | None = None


class Desired:
    """What the caller last asked for; the engine converges the workload to it."""

    RUNNING = "RUNNING"
    STOPPED = "STOPPED"
    DELETED = "DELETED"


@dataclass(frozen=True, slots=True)
class Instance:
    id: InstanceId
    project_id: ProjectId
    name: str
    description: str
    profile_id: str
    flavor: str
    storage: Storage
    extend_storage: tuple[Storage, ...] | None
    auto_stop: AutoStop
    annotations: Mapping[str, str]
    workspace_id: str
    pool_id: str | None
    ai_project_id: str
    user_id: UserId
    user_name: str
    status: InstanceStatus
    desired: str
    created_at: int
    updated_at: int
    version: int = 0
    running_since: int | None = None
    stop_at: int | None = None
    """ms at which the current run is stopped; set only while RUNNING with a countdown."""
    requested_at: int | None = None
    """ms of the last accepted caller action; a workload launched before it is stale."""
    failed: FailedReason | None = None
    handle: Mapping[str, Any] | None = None
    """The backend's small record of the workload (pid and port; container id; pod name)."""
    endpoint: Endpoint | None = None
    """Set by the engine while RUNNING; what the proxy connects to."""
    cleanup_pending: bool = False
    frozen: bool = False
    reserved_at: int | None = None
    """ms when the engine reserved the queued instance's slot (READY_TO_START)."""
    gpus: tuple[str, ...] | None = None
    """The whole GPUs assigned to it while it holds resources."""
    last_run_ms: int | None = None
    """How long its last run lasted (RUNNING until it stopped), for queue estimates."""
    extended_ms: int = 0
    """How much the current run was extended (``domain/policy.py``); 0 at each start."""
    warned_for: int | None = None
    """The stop (its time, ms) the current run was last warned of, so that each planned
    stop is announced once."""

    def evolve(self, **changes: Any) -> Instance:
        return replace(self, **changes)

    def remain_time(self, now_ms: int) -> int | None:
        if self.status is not InstanceStatus.RUNNING or self.stop_at is None:
            return None
        return max(0, (self.stop_at - now_ms) // 1000)
