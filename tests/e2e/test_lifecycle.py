"""A real JupyterLab per instance, end to end through the API (process backend)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.e2e.jupyter import Notebook
from tests.server import ServerProcess, processes_of, wait_for_status, wait_until

pytestmark = pytest.mark.slow

EVS_BODY = {
    "name": "e2e-notebook",
    "profile_id": "Multi-Engine 1.0 (python3)-cpu",
    "flavor": "modelarts.vm.cpu.2u",
    "spec": {"storage": {"type": "evs", "location": {"volume_size": 5}}},
}


def test_create_use_stop_start_delete(server_factory: Callable[..., ServerProcess]) -> None:
    server = server_factory(backend="process")
    with server.client() as api:
        _lifecycle(server, api)


def _lifecycle(server: ServerProcess, api: httpx.Client) -> None:
    created = api.post("", json=EVS_BODY).json()
    instance_id = created["id"]
    assert created["status"] == "CREATING"
    assert created["spec"]["storage"]["location"]["volume_size"] == 5

    running = wait_for_status(api, instance_id, "RUNNING")
    assert running["spec"]["annotations"]["url"] == f"{server.url}/notebooks/{instance_id}/"
    with Notebook(running["spec"]["annotations"]["url"], server.token) as notebook:
        assert notebook.status() == 200
        notebook.write("kept.txt", "survives stop and start")
        assert notebook.execute("1+1") == "2"
        assert processes_of(instance_id), "the instance's processes carry its tag"

    assert api.post(f"/{instance_id}/action", json={"action": "stop"}).json() == {
        "current_status": "STOPPING",
        "previous_state": "RUNNING",
    }
    wait_for_status(api, instance_id, "STOPPED")
    assert processes_of(instance_id) == [], "stop ends the kernel and the server"
    with Notebook(running["spec"]["annotations"]["url"], server.token) as old:
        assert old.refusal() == "ModelArts.6327", "the proxy says it is not running"

    api.post(f"/{instance_id}/action", json={"action": "start"})
    restarted = wait_for_status(api, instance_id, "RUNNING")
    with Notebook(restarted["spec"]["annotations"]["url"], server.token) as notebook:
        assert notebook.read("kept.txt") == "survives stop and start"

    api.post(f"/{instance_id}/action", json={"action": "stop"})
    wait_for_status(api, instance_id, "STOPPED")
    assert api.delete(f"/{instance_id}").json() == {"instance_id": instance_id}
    gone = api.get(f"/{instance_id}")
    assert gone.status_code == 400 and gone.json()["error_code"] == "ModelArts.6309"
    volume = Path(server.data_dir) / "volumes" / instance_id
    wait_until(lambda: not volume.exists(), "the EVS volume is destroyed")
    assert processes_of(instance_id) == []


def test_restart_rearms_and_replaces_the_server(
    server_factory: Callable[..., ServerProcess],
) -> None:
    server = server_factory(backend="process")
    with server.client() as api:
        _restart(api, server.token)


def _restart(api: httpx.Client, token: str) -> None:
    body = {
        **EVS_BODY,
        "spec": {**EVS_BODY["spec"], "auto_stop": {"enable": True, "duration": 3600}},
    }
    instance_id = api.post("", json=body).json()["id"]
    first = wait_for_status(api, instance_id, "RUNNING")
    with Notebook(first["spec"]["annotations"]["url"], token) as notebook:
        first_started = notebook.started()
    assert api.post(f"/{instance_id}/action", json={"action": "restart"}).json() == {
        "current_status": "RESTARTING",
        "previous_state": "RUNNING",
    }
    second = wait_for_status(api, instance_id, "RUNNING")
    assert second["spec"]["annotations"]["url"] == first["spec"]["annotations"]["url"]
    with Notebook(second["spec"]["annotations"]["url"], token) as notebook:
        assert notebook.started() != first_started, "a new server behind the same address"
    assert (
        second["spec"]["auto_stop"]["stop_timestamp"] > first["spec"]["auto_stop"]["stop_timestamp"]
    )
    api.post(f"/{instance_id}/action", json={"action": "stop"})
    wait_for_status(api, instance_id, "STOPPED")
    api.delete(f"/{instance_id}")
    wait_until(lambda: processes_of(instance_id) == [], "no process is left")


