"""Two replicas on one PostgreSQL with real JupyterLab: random actions, one replica
killed with SIGKILL and restarted; every instance converges and no process is orphaned."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import MINIMAL_BODY
from tests.server import ServerProcess, processes_of, wait_for_status, wait_until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.environ.get("DEMANAGER_TEST_POSTGRES_URL"),
        reason="several replicas share a PostgreSQL (DEMANAGER_TEST_POSTGRES_URL)",
    ),
]

INSTANCES = 6
ROUNDS = 3
REPLICA_ENV = {
    "DEMANAGER_LEASE_SECONDS": "3",
    "DEMANAGER_RECONCILE_INTERVAL_SECONDS": "0.5",
    "DEMANAGER_RATE_LIMIT_PER_SECOND": "0",
    "DEMANAGER_START_TIMEOUT_SECONDS": "90",
}


def _body(name: str) -> dict[str, object]:
    return {**MINIMAL_BODY, "name": name}


def _jupyter_servers(instance_id: str) -> list[int]:
    """PIDs of the instance's processes that are a Jupyter server (not a kernel)."""
    found = []
    for pid in processes_of(instance_id):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(b"jupyter" in part and b"kernel" not in part for part in argv):
            found.append(pid)
    return found


def test_two_replicas_converge_after_a_kill(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    first = server_factory(backend="process", env=REPLICA_ENV)
    # The second replica shares the first one's database and data dir (one node: the
    # same volumes and runtime files); only its log is its own.
    shared = {
        **REPLICA_ENV,
        "DEMANAGER_DATA_DIR": str(first.data_dir),
        "DEMANAGER_DATABASE_URL": first.env["DEMANAGER_DATABASE_URL"],
    }
    second = server_factory(backend="process", env=shared)
    second.project = first.project
    replicas = [first, second]
    rng = random.Random(7)
    desired: dict[str, str] = {}

    def api(replica: ServerProcess) -> httpx.Client:
        return replica.client(project=first.project)

    for n in range(INSTANCES):
        with api(replicas[n % 2]) as client:
            response = client.post("", json=_body(f"replicated-{n}"))
            assert response.status_code == 200, response.text
            desired[response.json()["id"]] = "RUNNING"
    with api(first) as client:
        for instance_id in desired:
            wait_for_status(client, instance_id, "RUNNING", timeout=180)

    for round_number in range(ROUNDS):
        for instance_id in desired:
            action = "stop" if desired[instance_id] == "RUNNING" else "start"
            if action == "stop" and rng.random() < 0.4:
                action = "restart"
            with api(rng.choice([r for r in replicas if r.proc is not None])) as client:
                response = client.post(f"/{instance_id}/action", json={"action": action})
            assert response.status_code == 200, response.text
            desired[instance_id] = "STOPPED" if action == "stop" else "RUNNING"
        if round_number == 1:
            # Crash one replica in the middle of the round's transitions, and bring it back
            # once the other has had time to take its instances over.
            victim = rng.choice(replicas)
            time.sleep(rng.uniform(0.2, 1.5))
            victim.kill()
            time.sleep(4)
            victim.start()
        with api(rng.choice(replicas)) as client:
            for instance_id, status in desired.items():
                wait_for_status(client, instance_id, status, timeout=180)

    for instance_id, status in desired.items():
        servers = _jupyter_servers(instance_id)
        if status == "RUNNING":
            assert len(servers) == 1, f"{instance_id}: Jupyter servers {servers}"
        else:
            assert servers == [], f"{instance_id} is STOPPED but runs {servers}"

    with api(second) as client:
        for instance_id, status in desired.items():
            if status == "RUNNING":
                stop = client.post(f"/{instance_id}/action", json={"action": "stop"})
                assert stop.status_code == 200, stop.text
        for instance_id in desired:
            wait_for_status(client, instance_id, "STOPPED", timeout=120)
            assert client.delete(f"/{instance_id}").status_code == 200
    wait_until(
        lambda: not any(processes_of(i) for i in desired), "no instance process is left", 60
    )
    for replica in replicas:
        assert "Traceback" not in replica.log(), replica.log()
