"""The backend contract: four calls, each safe to repeat, over a handle of the backend's own.

* ``start(spec)``: create the volume if it does not exist, then launch the
  workload, replacing any workload already running for the instance. Returns the
  handle to persist. May be called again after a crash at any point.
* ``observe(instance_id, handle)``: only reads; reports ABSENT, BOOTING or READY,
  and when READY where the proxy reaches the workload (``Observation.endpoint``).
  Never stops, starts or writes anything. Given no handle (a crash between launching
  and persisting it), it looks the workload up by instance id and returns its handle
  in ``Observation.handle`` so the engine adopts it.
* ``stop(instance_id, handle)``: end the workload and everything it spawned; keep
  the volume. Stopping what is not running is a no-op.
* ``delete(instance_id, handle, storage)``: ``stop`` plus destroy the instance's
  own volume (never object storage). Deleting what is gone is a no-op.
* ``check()``: what keeps this backend from working here, one line each, for
  ``demanager doctor``; empty when all is well.

A backend is a class registered under the ``demanager.backends`` entry-point group.
It declares three pydantic models: ``options_type`` (its settings section,
``DEMANAGER_{NAME}__…`` or the config file's ``{name}:`` mapping), ``handle_type``
(what it needs to find its workload again, stored as JSON in the instance's row) and
``recipe_type`` (its section of each catalog profile, ``launch.{name}``). It is built
as ``cls(options, context)``. docs/backends.md tells how to write one.

Errors: ``TransientBackendError`` (retry later) or ``PermanentBackendError``
(the instance fails with ``failed_reasons``); nothing else may escape.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from demanager.domain.catalog import Flavor, Profile
from demanager.domain.instance import Storage
from demanager.domain.planning import Observation
from demanager.errors import PermanentBackendError
from demanager.objectstore.access import ObjectAccess

if TYPE_CHECKING:
    from demanager.backends.objectmounts import HostMounts


class Handle(BaseModel):
    """What a backend stores to find its workload again. Subclass it; keep it small."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    launched_at: int | None = None
    """When the workload was launched, in ms on the engine's clock (``LaunchSpec.now_ms``
    plus the preparation time): the start timeout counts from it."""


class Recipe(BaseModel):
    """A backend's section of a catalog profile (``launch.{name}``). Subclass it."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Options(BaseModel):
    """A backend's settings section. Subclass it."""

    model_config = ConfigDict(frozen=True, extra="forbid")


H = TypeVar("H", bound=Handle)
R = TypeVar("R", bound=Recipe)


@dataclass(frozen=True)
class BackendContext:
    """Deployment facts every backend may need, apart from its own section."""

    data_dir: Path
    """The server's data directory (process backend: volumes and runtime files)."""
    node_id: str | None = None
    """``DEMANAGER_NODE_ID``: the name of the node local workloads run on, when set."""
    object_storage_root: Path | None = None
    """The folder standing in for object storage, when enabled."""
    object_access: ObjectAccess | None = None
    """How to reach a project's buckets over S3 (``objectstore/access.py``), when S3 is
    configured; backends move the data themselves and never hand keys to a notebook."""
    host_mounts: HostMounts | None = None
    """Synced copies of the buckets on this host (``objectmounts.py``), for backends whose
    workloads see host folders; set with ``object_access``."""
    instance_label: str = "demanager"
    """A name for this deployment, put on everything a backend creates, so two
    deployments sharing a Docker host or a cluster never touch each other's workloads."""


@dataclass(frozen=True)
class LaunchSpec:
    instance_id: str
    project_id: str
    """Object storage is scoped to it: two projects naming one bucket never meet."""
    profile: Profile
    flavor: Flavor
    storage: Storage
    extend_storage: tuple[Storage, ...]
    now_ms: int
    generation: int = 0
    """The caller action this launch serves (its ``requested_at``): a launch of a workload
    already launched for the same generation is a duplicate, which backends may count."""
    pool_id: str | None = None
    """The dedicated pool the instance runs in (``spec.pool_id``), None for the public one."""
    gpus: tuple[str, ...] | None = None
    """The host's GPUs assigned to the instance, whole: the only ones its workload may
    see (``()``: none of them). None when demanager does not assign the host's GPUs:
    the backend requests the flavor's number of GPUs from its scheduler instead."""


class Backend(Protocol):
    name: ClassVar[str]
    options_type: ClassVar[type[Options]]
    handle_type: ClassVar[type[Handle]]
    recipe_type: ClassVar[type[Recipe]]
    node: str | None
    """The node whose workloads this backend can see and stop (``this_node()`` for local
    processes), or None when every replica reaches every workload (a cluster, a shared
    Docker host). The engine stamps it into each stored handle, and only replicas of
    that node drive the instance while one of them is alive."""

    def __init__(self, options: Any, context: BackendContext) -> None: ...

    async def start(self, spec: LaunchSpec) -> Handle: ...

    async def observe(self, instance_id: str, handle: Any) -> Observation[Handle]: ...

    async def stop(self, instance_id: str, handle: Any) -> None: ...

    async def delete(self, instance_id: str, handle: Any, storage: Storage) -> None: ...

    async def check(self) -> list[str]: ...

    async def close(self) -> None: ...


def recipe_of(recipe_type: type[R], name: str, profile: Profile) -> R:
    """The profile's ``launch.{name}`` section as ``recipe_type`` (defaults when absent)."""
    try:
        return recipe_type.model_validate(profile.launch.get(name) or {})
    except ValidationError as exc:
        raise PermanentBackendError(
            f"profile {profile.id!r}: bad launch.{name} section in the catalog: "
            f"{_first_error(exc)}"
        ) from exc


def _first_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"{where}: {first['msg']}" if where else str(first["msg"])
