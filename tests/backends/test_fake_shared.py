"""The fake backend on its own: in memory, and with workloads in a directory several
servers share (``DEMANAGER_FAKE__STATE_DIR``)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from demanager.backends.base import BackendContext, LaunchSpec
from demanager.backends.fake import FakeBackend, FakeHandle
from demanager.backends.fake_state import Launch, launches, workloads
from demanager.backends.options import FakeOptions
from demanager.catalog import load_catalog
from demanager.domain.instance import Storage
from demanager.domain.planning import Workload
from demanager.errors import PermanentBackendError

CATALOG = load_catalog(None)


def _spec(instance_id: str, *, generation: int = 1, now_ms: int = 1_000_000,
          profile: str = "Multi-Engine 1.0 (python3)-cpu") -> LaunchSpec:
    return LaunchSpec(
        instance_id=instance_id,
        project_id="p" * 32,
        profile=CATALOG.profiles[profile],
        flavor=CATALOG.flavors["modelarts.vm.cpu.2u"],
        storage=Storage("evs"),
        extend_storage=(),
        now_ms=now_ms,
        generation=generation,
    )


BackendFactory = Callable[..., FakeBackend]


@pytest.fixture
async def make(tmp_path: Path) -> AsyncIterator[BackendFactory]:
    """Fake backends on ``tmp_path``'s data dir; closed after the test."""
    made: list[FakeBackend] = []

    def build(**options: Any) -> FakeBackend:
        backend = FakeBackend(FakeOptions(**options), BackendContext(data_dir=tmp_path / "data"))
        made.append(backend)
        return backend

    yield build
    for backend in made:
        await backend.close()


async def test_two_servers_on_one_directory_share_workloads(
    make: BackendFactory, tmp_path: Path
) -> None:
    one = make(state_dir=tmp_path / "state")
    two = make(state_dir=tmp_path / "state")
    assert one.node is None and two.node is None

    handle = await one.start(_spec("DE-a", generation=7, now_ms=1_234))
    assert handle.launched_at == 1_234 and handle.generation == 7
    seen = await two.observe("DE-a", None)
    assert seen.workload is Workload.READY
    assert seen.launched_at == 1_234
    assert seen.handle == handle  # a server that lost the handle adopts the workload

    await two.stop("DE-a", None)
    assert (await one.observe("DE-a", handle)).workload is Workload.ABSENT


async def test_a_workload_boots_for_the_start_delay(make: BackendFactory, tmp_path: Path) -> None:
    backend = make(state_dir=tmp_path / "state", start_delay_seconds=0.3)
    await backend.start(_spec("DE-a"))
    assert (await backend.observe("DE-a", None)).workload is Workload.BOOTING
    await asyncio.sleep(0.35)
    assert (await backend.observe("DE-a", None)).workload is Workload.READY


async def test_every_launch_is_in_the_ledger(make: BackendFactory, tmp_path: Path) -> None:
    state = tmp_path / "state"
    one, two = make(state_dir=state), make(state_dir=state)
    first = await one.start(_spec("DE-a", generation=1, now_ms=10))
    second = await two.start(_spec("DE-a", generation=2, now_ms=20))
    await one.start(_spec("DE-b", generation=5, now_ms=30))

    pid = os.getpid()
    assert launches(state) == [Launch("DE-a", 1, 10, pid), Launch("DE-a", 2, 20, pid),
                               Launch("DE-b", 5, 30, pid)]
    assert [(launch.instance_id, launch.generation) for launch in launches(state)] == [
        ("DE-a", 1), ("DE-a", 2), ("DE-b", 5)]
    # The second start replaced the first workload.
    seen = await one.observe("DE-a", first)
    assert seen.handle == second and seen.launched_at == 20


async def test_stop_and_delete_are_idempotent(make: BackendFactory, tmp_path: Path) -> None:
    backend = make(state_dir=tmp_path / "state")
    handle = await backend.start(_spec("DE-a"))
    for _ in range(2):
        await backend.stop("DE-a", handle)
        assert (await backend.observe("DE-a", handle)).workload is Workload.ABSENT
    await backend.start(_spec("DE-a"))
    for _ in range(2):
        await backend.delete("DE-a", None, Storage("evs"))
        assert (await backend.observe("DE-a", None)).workload is Workload.ABSENT
    await backend.stop("DE-never", None)
    await backend.delete("DE-never", None, Storage("evs"))
    assert [launch.instance_id for launch in launches(tmp_path / "state")] == ["DE-a", "DE-a"]


async def test_workloads_outlive_the_server(make: BackendFactory, tmp_path: Path) -> None:
    first = make(state_dir=tmp_path / "state")
    handle = await first.start(_spec("DE-a"))
    await first.close()
    later = make(state_dir=tmp_path / "state")
    assert (await later.observe("DE-a", None)).handle == handle


async def test_the_echo_upstream_serves_what_its_server_launched(
    make: BackendFactory, tmp_path: Path
) -> None:
    one = make(state_dir=tmp_path / "state")
    two = make(state_dir=tmp_path / "state")
    mine = await one.start(_spec("DE-a"))
    theirs = await two.start(_spec("DE-b"))
    assert mine.port != theirs.port
    async with httpx.AsyncClient() as http:

        async def get(handle: FakeHandle, instance_id: str, port: int) -> int:
            response = await http.get(f"http://127.0.0.1:{port}{handle.base_url}api",
                                      headers={"Authorization": f"token {handle.token}"})
            return response.status_code

        assert await get(mine, "DE-a", mine.port) == 200
        assert await get(theirs, "DE-b", theirs.port) == 200
        # Each echo server knows only its own workloads; a stopped one is refused.
        assert await get(theirs, "DE-b", mine.port) == 403
        await two.stop("DE-a", None)
        assert await get(mine, "DE-a", mine.port) == 403


async def test_a_failing_profile_launches_nothing(make: BackendFactory, tmp_path: Path) -> None:
    backend = make(state_dir=tmp_path / "state")
    spec = _spec("DE-a")
    failing = replace(spec, profile=replace(spec.profile, id="fail-me"))
    with pytest.raises(PermanentBackendError):
        await backend.start(failing)
    assert launches(tmp_path / "state") == []


async def test_in_memory_workloads_stay_in_their_server(make: BackendFactory) -> None:
    one, two = make(), make()
    assert one.node is not None and two.node is not None and one.node != two.node
    handle = await one.start(_spec("DE-a", generation=3, now_ms=50))
    seen = await one.observe("DE-a", handle)
    assert seen.workload is Workload.READY and seen.launched_at == 50
    assert seen.handle is None  # this server keeps the handle itself
    assert (await two.observe("DE-a", None)).workload is Workload.ABSENT
    await one.stop("DE-a", handle)
    await one.stop("DE-a", handle)
    assert (await one.observe("DE-a", None)).workload is Workload.ABSENT


async def test_workloads_lists_what_exists(make: BackendFactory, tmp_path: Path) -> None:
    backend = make(state_dir=tmp_path / "state")
    await backend.start(_spec("DE-a", generation=4))
    await backend.start(_spec("DE-b"))
    await backend.stop("DE-b", None)
    existing = workloads(tmp_path / "state")
    assert list(existing) == ["DE-a"] and existing["DE-a"].generation == 4
