"""kill -9 the server while instances run and boot; a restart on the same data dir converges."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import httpx
import pytest

from tests.e2e.jupyter import Notebook
from tests.server import ServerProcess, processes_of, wait_for_status, wait_until

pytestmark = pytest.mark.slow


def _body(name: str) -> dict[str, object]:
    return {
        "name": name,
        "profile_id": "Multi-Engine 1.0 (python3)-cpu",
        "flavor": "modelarts.vm.cpu.2u",
        "spec": {"storage": {"type": "evs"}},
    }


def test_crash_and_restart_adopts_everything(server_factory: Callable[..., ServerProcess]) -> None:
    server = server_factory(backend="process")
    with server.client() as api:
        running = [api.post("", json=_body(f"run-{i}")).json()["id"] for i in range(2)]
        before = {i: wait_for_status(api, i, "RUNNING") for i in running}
        pids_before = {i: _server_pid(server, i) for i in running}
        booting = api.post("", json=_body("booting")).json()["id"]
        assert api.get(f"/{booting}").json()["status"] == "CREATING"

        started_before = {}
        for instance_id in running:
            with Notebook(before[instance_id]["spec"]["annotations"]["url"], server.token) as nb:
                started_before[instance_id] = nb.started()

    server.kill()
    for instance_id in running:
        # No proxy while demanager is down: ask the workload itself.
        assert _direct_status(server, instance_id) == 200, (
            "workloads outlive the server that started them"
        )

    server.start()
    every = [*running, booting]
    with server.client() as api:
        after = {i: wait_for_status(api, i, "RUNNING") for i in every}
        for instance_id in every:
            with Notebook(after[instance_id]["spec"]["annotations"]["url"], server.token) as nb:
                assert nb.status() == 200
        for instance_id in running:
            # Adopted, not restarted: the same processes, reached through the same address.
            assert _server_pid(server, instance_id) == pids_before[instance_id]
            assert pids_before[instance_id] in processes_of(instance_id)
            with Notebook(after[instance_id]["spec"]["annotations"]["url"], server.token) as nb:
                assert nb.started() == started_before[instance_id]
        assert len({tuple(processes_of(i)) for i in every}) == 3

        for instance_id in every:
            api.post(f"/{instance_id}/action", json={"action": "stop"})
        for instance_id in every:
            wait_for_status(api, instance_id, "STOPPED")
            assert api.delete(f"/{instance_id}").status_code == 200
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(processes_of(i) for i in every):
        time.sleep(0.2)
    assert [p for i in every for p in processes_of(i)] == [], "no orphan process is left"


def _direct_status(server: ServerProcess, instance_id: str) -> int:
    """GET api/status straight from the workload, with the credential the backend keeps."""
    record = json.loads((server.data_dir / "runtime" / instance_id / "server.json").read_text())
    url = f"http://127.0.0.1:{record['port']}{record['base_url']}api/status"
    try:
        return httpx.get(url, headers={"Authorization": f"token {record['token']}"}).status_code
    except httpx.HTTPError:
        return 0


def _server_pid(server: ServerProcess, instance_id: str) -> int:
    """The pid the process backend recorded for the instance's Jupyter server."""
    record = json.loads((server.data_dir / "runtime" / instance_id / "server.json").read_text())
    return int(record["pid"])


def test_a_dead_workload_is_restarted(server_factory: Callable[..., ServerProcess]) -> None:
    """RUNNING whose server died while demanager was down: UNAVAILABLE, then RUNNING again."""
    import os
    import signal

    server = server_factory(backend="process")
    with server.client() as api:
        instance_id = api.post("", json=_body("dies")).json()["id"]
        wait_for_status(api, instance_id, "RUNNING")
    server.kill()
    for pid in processes_of(instance_id):
        os.kill(pid, signal.SIGKILL)
    server.start()
    with server.client() as api:
        # The row says RUNNING until the first sweep finds the workload dead: wait for
        # the notebook itself to answer again.
        back = wait_for_status(api, instance_id, "RUNNING")
        with Notebook(back["spec"]["annotations"]["url"], server.token) as nb:
            wait_until(lambda: nb.status() == 200, "the relaunched notebook answers", 120)
        assert api.get(f"/{instance_id}").json()["status"] == "RUNNING"
        api.post(f"/{instance_id}/action", json={"action": "stop"})
        wait_for_status(api, instance_id, "STOPPED")
        api.delete(f"/{instance_id}")


def test_defect_02_a_frozen_notebook_is_unavailable_until_it_answers(
    server_factory: Callable[..., ServerProcess],
) -> None:
    """SIGSTOP: alive but silent -> UNAVAILABLE; SIGCONT -> RUNNING, the same process."""
    import os
    import signal

    server = server_factory(backend="process", env={"DEMANAGER_HEALTH_FAILURES": "2"})
    with server.client() as api:
        instance_id = api.post("", json=_body("frozen")).json()["id"]
        wait_for_status(api, instance_id, "RUNNING")
        pid = _server_pid(server, instance_id)
        os.kill(pid, signal.SIGSTOP)
        try:
            fault = wait_for_status(api, instance_id, "UNAVAILABLE", timeout=60)
            reason = fault["spec"]["failed_reasons"]
            assert reason["code"] == "ModelArts.6361"
            assert reason["detail"]["cause"] == "unresponsive"
            assert fault["spec"]["annotations"]["url"] == ""
        finally:
            os.kill(pid, signal.SIGCONT)
        back = wait_for_status(api, instance_id, "RUNNING", timeout=60)
        assert back["spec"]["failed_reasons"] is None
        assert _server_pid(server, instance_id) == pid, "recovered, not relaunched"
        with Notebook(back["spec"]["annotations"]["url"], server.token) as nb:
            assert nb.status() == 200
        api.post(f"/{instance_id}/action", json={"action": "stop"})
        stopped = wait_for_status(api, instance_id, "STOPPED")
        assert stopped["spec"]["failed_reasons"] is None
        api.delete(f"/{instance_id}")
