"""An in-memory backend with knobs, for tests and load benchmarks.

Workloads are entries in a dict: they become READY ``start_delay`` seconds after
``start`` and vanish with the server process. Knobs (settings): start delay;
``fail`` in a profile id makes its start fail permanently.

Each workload's endpoint is a small loopback echo server (``echo_upstream``)
that demands the workload's own token, so the proxy can be tested end to end
without a notebook server.
"""

from __future__ import annotations

import secrets
import time

from demanager.backends.base import Handle, LaunchSpec
from demanager.backends.echo_upstream import EchoUpstream
from demanager.backends.node import this_node
from demanager.domain.instance import Endpoint, Storage
from demanager.domain.planning import Observation, Workload
from demanager.errors import PermanentBackendError
from demanager.settings import Settings


class FakeBackend:
    name = "fake"

    def __init__(self, settings: Settings) -> None:
        # Workloads live in this process's memory: only this process sees them.
        self.node: str | None = f"{this_node(settings.node_id)}-fake-{secrets.token_hex(4)}"
        self._delay = settings.fake_start_delay_seconds
        self._workloads: dict[str, tuple[int, float]] = {}
        self._tokens: dict[str, str] = {}
        self._upstream = EchoUpstream(self._tokens)

    async def start(self, spec: LaunchSpec) -> Handle:
        if "fail" in spec.profile.id.lower():
            raise PermanentBackendError("the fake backend was told to fail this profile")
        port = await self._upstream.ensure_started()
        token = secrets.token_hex(16)
        self._workloads[spec.instance_id] = (spec.now_ms, time.monotonic() + self._delay)
        self._tokens[spec.instance_id] = token
        return {"launched_at": spec.now_ms, "token": token, "port": port,
                "base_url": f"/notebooks/{spec.instance_id}/"}

    async def observe(self, instance_id: str, handle: Handle | None) -> Observation:
        entry = self._workloads.get(instance_id)
        if entry is None:
            return Observation(Workload.ABSENT)
        launched_at, ready_at = entry
        ready = time.monotonic() >= ready_at
        return Observation(Workload.READY if ready else Workload.BOOTING, launched_at)

    async def stop(self, instance_id: str, handle: Handle | None) -> None:
        self._workloads.pop(instance_id, None)
        self._tokens.pop(instance_id, None)

    async def delete(self, instance_id: str, handle: Handle | None, storage: Storage) -> None:
        await self.stop(instance_id, handle)

    def endpoint(self, instance_id: str, handle: Handle) -> Endpoint | None:
        if "port" not in handle or "token" not in handle:
            return None
        return Endpoint(host="127.0.0.1", port=int(handle["port"]),
                        base_path=str(handle.get("base_url", f"/notebooks/{instance_id}/")),
                        headers={"Authorization": f"token {handle['token']}"})

    async def close(self) -> None:
        self._workloads.clear()
        self._tokens.clear()
        await self._upstream.close()
