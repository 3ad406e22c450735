"""An in-memory backend with knobs, for tests and load benchmarks.

Workloads are entries in a dict: they become READY ``start_delay`` seconds after
``start`` and vanish with the server process. Knobs (settings): start delay;
``fail`` in a profile id makes its start fail permanently.
"""

from __future__ import annotations

import secrets
import time

from demanager.backends.base import Handle, LaunchSpec
from demanager.domain.instance import Storage
from demanager.domain.planning import Observation, Workload
from demanager.errors import PermanentBackendError
from demanager.settings import Settings


class FakeBackend:
    name = "fake"

    def __init__(self, settings: Settings) -> None:
        self._delay = settings.fake_start_delay_seconds
        self._workloads: dict[str, tuple[int, float]] = {}
        self._target = settings.target_domain

    async def start(self, spec: LaunchSpec) -> Handle:
        if "fail" in spec.profile.id.lower():
            raise PermanentBackendError("the fake backend was told to fail this profile")
        self._workloads[spec.instance_id] = (spec.now_ms, time.monotonic() + self._delay)
        return {"launched_at": spec.now_ms, "token": secrets.token_hex(16)}

    async def observe(self, instance_id: str, handle: Handle | None) -> Observation:
        entry = self._workloads.get(instance_id)
        if entry is None:
            return Observation(Workload.ABSENT)
        launched_at, ready_at = entry
        ready = time.monotonic() >= ready_at
        return Observation(Workload.READY if ready else Workload.BOOTING, launched_at)

    async def stop(self, instance_id: str, handle: Handle | None) -> None:
        self._workloads.pop(instance_id, None)

    async def delete(self, instance_id: str, handle: Handle | None, storage: Storage) -> None:
        self._workloads.pop(instance_id, None)

    def access_url(self, instance_id: str, handle: Handle) -> str | None:
        return f"{self._target}/notebooks/{instance_id}/lab?token={handle.get('token', '')}"

    def access_token(self, handle: Handle) -> str | None:
        token = handle.get("token")
        return str(token) if token else None

    async def close(self) -> None:
        self._workloads.clear()
