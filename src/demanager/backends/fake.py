"""A backend with knobs and no real workloads, for tests and load benchmarks.

Workloads become READY ``start_delay`` seconds after ``start``. By default they live
in the server's memory and vanish with it; with ``fake_state_dir`` they live in a
SQLite file there (``fake_state``), shared by every server given that directory, the
way a cluster's workloads outlive any one replica. Knobs (settings): start delay;
``fail`` in a profile id makes its start fail permanently.

Each workload's endpoint is a small loopback echo server (``echo_upstream``) in the
process that launched it, which demands the workload's own token, so the proxy can
be tested end to end without a notebook server.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from demanager.backends.base import BackendContext, Handle, LaunchSpec
from demanager.backends.echo_upstream import EchoUpstream
from demanager.backends.fake_state import (
    FakeWorkload,
    MemoryWorkloads,
    SharedWorkloads,
)
from demanager.backends.node import this_node
from demanager.backends.options import FakeOptions, FakeRecipe
from demanager.domain.instance import Endpoint, Storage
from demanager.domain.planning import Observation, Workload
from demanager.errors import PermanentBackendError

P = ParamSpec("P")
T = TypeVar("T")


class FakeHandle(Handle):
    token: str
    port: int
    base_url: str
    generation: int = 0


class FakeBackend:
    name = "fake"
    options_type = FakeOptions
    handle_type = FakeHandle
    recipe_type = FakeRecipe

    def __init__(self, options: FakeOptions, context: BackendContext) -> None:
        self._delay = options.start_delay_seconds
        self._store: MemoryWorkloads | SharedWorkloads
        self._clock: Callable[[], float]
        if options.state_dir is None:
            # Only this process sees its workloads.
            self.node: str | None = f"{this_node(context.node_id)}-fake-{secrets.token_hex(4)}"
            self._store = MemoryWorkloads()
            self._clock = time.monotonic
        else:
            # Every server on the directory reaches every workload.
            self.node = None
            self._store = SharedWorkloads(options.state_dir)
            self._clock = time.time  # compared across processes
        self._upstream = EchoUpstream(self._token_of)

    async def _run(self, call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """A call on the store: in a worker thread when the store is a file."""
        if isinstance(self._store, SharedWorkloads):
            return await asyncio.to_thread(call, *args, **kwargs)
        return call(*args, **kwargs)

    def _token_of(self, instance_id: str) -> str | None:
        """The token the echo server demands: only for workloads launched by this process
        (another server's workloads answer on that server's echo port). A tiny read,
        made in the event loop."""
        workload = self._store.get(instance_id)
        if workload is None or workload.port != self._upstream.port:
            return None
        return workload.token

    # --- the contract ------------------------------------------------------------------

    async def start(self, spec: LaunchSpec) -> FakeHandle:
        if "fail" in spec.profile.id.lower():
            raise PermanentBackendError("the fake backend was told to fail this profile")
        port = await self._upstream.ensure_started()
        workload = FakeWorkload(
            generation=spec.generation,
            launched_at=spec.now_ms,
            ready_at=self._clock() + self._delay,
            token=secrets.token_hex(16),
            port=port,
            launched_by=os.getpid(),
        )
        await self._run(self._store.put, spec.instance_id, workload)
        return self._handle(spec.instance_id, workload)

    async def observe(
        self, instance_id: str, handle: FakeHandle | None
    ) -> Observation[FakeHandle]:
        workload = await self._run(self._store.get, instance_id)
        if workload is None:
            return Observation(Workload.ABSENT)
        found = self._handle(instance_id, workload)
        ready = self._clock() >= workload.ready_at
        state = Workload.READY if ready else Workload.BOOTING
        endpoint = _endpoint(found) if ready else None
        if isinstance(self._store, MemoryWorkloads):
            return Observation(state, workload.launched_at, endpoint=endpoint)
        # The stored handle lets a server adopt a workload whose launcher died before
        # it saved the handle.
        return Observation(state, workload.launched_at, found, endpoint=endpoint)

    async def stop(self, instance_id: str, handle: FakeHandle | None) -> None:
        await self._run(self._store.remove, instance_id)

    async def delete(self, instance_id: str, handle: FakeHandle | None, storage: Storage) -> None:
        await self.stop(instance_id, handle)

    async def check(self) -> list[str]:
        return ["the fake backend runs no notebooks: it is for tests and benchmarks"]

    async def close(self) -> None:
        await self._upstream.close()
        # A shared store keeps its workloads: they belong to every server on the directory.
        await self._run(self._store.close)

    @staticmethod
    def _handle(instance_id: str, workload: FakeWorkload) -> FakeHandle:
        return FakeHandle(launched_at=workload.launched_at, token=workload.token,
                          port=workload.port, base_url=f"/notebooks/{instance_id}/",
                          generation=workload.generation)


def _endpoint(handle: FakeHandle) -> Endpoint:
    return Endpoint(host="127.0.0.1", port=handle.port, base_path=handle.base_url,
                    headers={"Authorization": f"token {handle.token}"})
