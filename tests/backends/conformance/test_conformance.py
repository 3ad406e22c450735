"""One conformance suite, the same cases against every backend (docs/backends.md).

Each case drives a real server process over the API, and reaches the notebook's files
through demanager's proxy with Jupyter's contents API, so what is checked is what a
user sees. The backend's harness (``harness.py``) only looks at what lies outside the
API: which workload runs, killing it behind demanager's back, and what is left over.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from demanager.backends.base import Backend, Handle, LaunchSpec
from demanager.catalog import load_catalog
from demanager.domain.instance import Location, Storage
from demanager.domain.planning import Observation, Workload
from tests.backends.conformance.harness import (
    BROKEN,
    CATALOG,
    FLAVOR,
    PROFILE,
    Harness,
)
from tests.e2e.jupyter import Notebook
from tests.server import ServerProcess, wait_for_status, wait_until

pytestmark = pytest.mark.slow

START_TIMEOUT = 180.0


@pytest.fixture
def server(harness: Harness) -> Iterator[ServerProcess]:
    started = ServerProcess(
        harness.workdir / "server",
        backend=harness.backend,
        env={**harness.env(), "DEMANAGER_CATALOG_FILE": str(CATALOG)},
    )
    try:
        yield started.start()
    finally:
        started.close()


def _body(name: str, profile: str = PROFILE) -> dict[str, Any]:
    return {"name": name, "profile_id": profile, "flavor": FLAVOR,
            "spec": {"storage": {"type": "evs", "location": {"volume_size": 5}}}}


def _running(server: ServerProcess, name: str) -> tuple[str, dict[str, Any]]:
    with server.client() as api:
        created = api.post("", json=_body(name))
        assert created.status_code == 200, created.text
        instance_id = created.json()["id"]
        return instance_id, wait_for_status(api, instance_id, "RUNNING", START_TIMEOUT)


def _notebook(view: dict[str, Any], server: ServerProcess) -> Notebook:
    return Notebook(view["spec"]["annotations"]["url"], server.token)


def _act(server: ServerProcess, instance_id: str, action: str, until: str) -> dict[str, Any]:
    with server.client() as api:
        response = api.post(f"/{instance_id}/action", json={"action": action})
        assert response.status_code == 200, response.text
        return wait_for_status(api, instance_id, until, START_TIMEOUT)


def _delete(server: ServerProcess, harness: Harness, instance_id: str) -> None:
    with server.client() as api:
        if api.get(f"/{instance_id}").json()["status"] == "RUNNING":
            api.post(f"/{instance_id}/action", json={"action": "stop"})
            wait_for_status(api, instance_id, "STOPPED", START_TIMEOUT)
        deleted = api.delete(f"/{instance_id}")
        assert deleted.status_code == 200, deleted.text
    wait_until(lambda: harness.leftovers(instance_id) == [],
               f"nothing of {instance_id} is left", 60)


def test_launch_then_ready(harness: Harness, server: ServerProcess) -> None:
    instance_id, view = _running(server, "ready")
    assert harness.workload_id(instance_id) is not None
    with _notebook(view, server) as notebook:
        assert notebook.status() == 200
    _delete(server, harness, instance_id)


def test_stop_keeps_the_volume_and_start_sees_the_files(
    harness: Harness, server: ServerProcess
) -> None:
    instance_id, view = _running(server, "files")
    with _notebook(view, server) as notebook:
        notebook.write("kept.txt", "written before the stop")
    _act(server, instance_id, "stop", "STOPPED")
    wait_until(lambda: harness.workload_id(instance_id) is None, "the workload is gone", 60)
    restarted = _act(server, instance_id, "start", "RUNNING")
    with _notebook(restarted, server) as notebook:
        assert notebook.read("kept.txt") == "written before the stop"
    _delete(server, harness, instance_id)


def test_restart_launches_a_new_workload_on_the_same_volume(
    harness: Harness, server: ServerProcess
) -> None:
    instance_id, view = _running(server, "restart")
    first = harness.workload_id(instance_id)
    with _notebook(view, server) as notebook:
        notebook.write("kept.txt", "across a restart")
    with server.client() as api:
        response = api.post(f"/{instance_id}/action", json={"action": "restart"})
        assert response.status_code == 200, response.text
        wait_until(lambda: harness.workload_id(instance_id) not in (None, first),
                   "a new workload runs", START_TIMEOUT)
        restarted = wait_for_status(api, instance_id, "RUNNING", START_TIMEOUT)
    with _notebook(restarted, server) as notebook:
        assert notebook.read("kept.txt") == "across a restart"
    _delete(server, harness, instance_id)


def test_delete_leaves_nothing(harness: Harness, server: ServerProcess) -> None:
    instance_id, view = _running(server, "delete")
    with _notebook(view, server) as notebook:
        notebook.write("gone.txt", "deleted with the volume")
    assert harness.leftovers(instance_id) != [], "a running instance leaves traces"
    _delete(server, harness, instance_id)


def test_a_killed_server_adopts_its_workloads(harness: Harness, server: ServerProcess) -> None:
    instance_id, view = _running(server, "adopt")
    before = harness.workload_id(instance_id)
    with _notebook(view, server) as notebook:
        notebook.write("kept.txt", "across a crash of demanager")
    server.kill()
    assert harness.workload_id(instance_id) == before, "the workload outlives the server"
    server.start()
    with server.client() as api:
        after = wait_for_status(api, instance_id, "RUNNING", START_TIMEOUT)
    assert harness.workload_id(instance_id) == before, "adopted, not relaunched"
    with _notebook(after, server) as notebook:
        assert notebook.read("kept.txt") == "across a crash of demanager"
    _delete(server, harness, instance_id)


def test_a_workload_that_dies_is_reported_and_relaunched(
    harness: Harness, server: ServerProcess
) -> None:
    instance_id, _ = _running(server, "dies")
    first = harness.workload_id(instance_id)
    harness.kill_workload(instance_id)
    seen: list[dict[str, Any]] = []
    with server.client() as api:

        def reported() -> bool:
            seen.append(api.get(f"/{instance_id}").json())
            return seen[-1]["status"] == "UNAVAILABLE"

        wait_until(reported, "the dead workload is reported", 60)
        reasons = seen[-1]["spec"]["failed_reasons"]
        assert reasons["code"] == "ModelArts.6361" and reasons["detail"]["cause"] == "exited"
        wait_for_status(api, instance_id, "RUNNING", START_TIMEOUT)
    assert harness.workload_id(instance_id) not in (None, first)
    _delete(server, harness, instance_id)


def test_a_launch_that_cannot_work_fails_with_a_reason(
    harness: Harness, server: ServerProcess
) -> None:
    with server.client() as api:
        created = api.post("", json=_body("broken", profile=BROKEN))
        assert created.status_code == 200, created.text
        instance_id = created.json()["id"]
        failed = wait_for_status(api, instance_id, "CREATE_FAILED", START_TIMEOUT)
    reasons = failed["spec"]["failed_reasons"]
    assert reasons["code"].startswith("ModelArts."), reasons
    assert harness.broken_reason in reasons["message"], reasons
    assert harness.workload_id(instance_id) is None
    _delete(server, harness, instance_id)


def test_every_call_is_idempotent(harness: Harness) -> None:
    asyncio.run(_idempotent(harness))


async def _idempotent(harness: Harness) -> None:
    backend = await asyncio.to_thread(harness.make_backend)
    instance_id = f"DE-{uuid.uuid4()}"
    spec = _spec(instance_id)
    try:
        assert (await backend.observe(instance_id, None)).workload is Workload.ABSENT
        await backend.stop(instance_id, None)  # nothing to stop yet
        first = await backend.start(spec)
        # A start repeated (a crash before its handle was stored) replaces the workload.
        second = await backend.start(spec)
        ready = await _until_ready(backend, instance_id, second)
        assert ready.endpoint is not None
        assert (await backend.observe(instance_id, second)).workload is Workload.READY
        # Given no handle, the backend finds the workload by instance id (adoption).
        found = await backend.observe(instance_id, None)
        assert found.workload is Workload.READY and found.handle is not None
        assert first is not None
        await backend.stop(instance_id, second)
        await backend.stop(instance_id, second)
        await backend.stop(instance_id, None)
        assert (await backend.observe(instance_id, second)).workload is Workload.ABSENT
        assert harness.workload_id(instance_id) is None
        storage = spec.storage
        await backend.delete(instance_id, second, storage)
        await backend.delete(instance_id, second, storage)
        await backend.delete(instance_id, None, storage)
        deadline = time.monotonic() + 60
        while harness.leftovers(instance_id) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert harness.leftovers(instance_id) == []
    finally:
        await backend.delete(instance_id, None, spec.storage)
        await backend.close()


async def _until_ready(backend: Backend, instance_id: str, handle: Handle) -> Observation[Handle]:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        observed = await backend.observe(instance_id, handle)
        if observed.workload is Workload.READY or time.monotonic() > deadline:
            assert observed.workload is Workload.READY, f"{instance_id} never became ready"
            return observed
        await asyncio.sleep(0.2)


def _spec(instance_id: str) -> LaunchSpec:
    catalog = load_catalog(CATALOG)
    return LaunchSpec(
        instance_id=instance_id,
        project_id=uuid.uuid4().hex,
        profile=catalog.profiles[PROFILE],
        flavor=catalog.flavors[FLAVOR],
        storage=Storage("evs", Location(path="/home/ma-user/work", volume_size=5)),
        extend_storage=(),
        now_ms=int(time.time() * 1000),
        generation=1,
    )


