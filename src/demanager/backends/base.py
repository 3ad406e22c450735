"""The backend contract: four calls, each safe to repeat.

* ``start(spec)``: create the volume if it does not exist, then launch the
  workload, replacing any workload already running for the instance. Returns the
  handle to persist. May be called again after a crash at any point.
* ``observe(instance_id, handle)``: only reads; reports ABSENT, BOOTING or READY.
  Never stops, starts or writes anything.
* ``stop(instance_id, handle)``: end the workload and everything it spawned; keep
  the volume. Stopping what is not running is a no-op.
* ``delete(instance_id, handle, storage)``: ``stop`` plus destroy the instance's
  own volume (never object storage). Deleting what is gone is a no-op.
* ``node``: see the attribute below.
* ``endpoint(instance_id, handle)``: where the proxy reaches the workload of
  ``handle`` and which credential it adds upstream. Pure: no I/O. The engine
  stores the answer when it marks the instance RUNNING; the API and the proxy
  read that, never the backend.

Errors: ``TransientBackendError`` (retry later) or ``PermanentBackendError``
(the instance fails with ``failed_reasons``); nothing else may escape.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from demanager.domain.catalog import Flavor, Profile
from demanager.domain.instance import Endpoint, Storage
from demanager.domain.planning import Observation

Handle = Mapping[str, Any]


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


class Backend(Protocol):
    name: str
    node: str | None
    """The node whose workloads this backend can see and stop (``this_node()`` for local
    processes), or None when every replica reaches every workload (a cluster). The engine
    stamps it into each handle, and only replicas of that node drive the instance while
    one of them is alive."""

    async def start(self, spec: LaunchSpec) -> Handle: ...

    async def observe(self, instance_id: str, handle: Handle | None) -> Observation: ...

    async def stop(self, instance_id: str, handle: Handle | None) -> None: ...

    async def delete(self, instance_id: str, handle: Handle | None, storage: Storage) -> None: ...

    def endpoint(self, instance_id: str, handle: Handle) -> Endpoint | None: ...

    async def close(self) -> None: ...
