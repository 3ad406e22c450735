"""A real JupyterLab per instance in a container, end to end through the API (docker
backend): the lifecycle of the process backend's e2e test, and the flavor's limits as
the notebook's own code sees them."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import websocket

from tests.backends.conformance.docker_harness import INSTANCE, remove_labelled
from tests.backends.conformance.harness import CATALOG, PROFILE, SMALL_FLAVOR
from tests.docker_env import (  # noqa: F401  (the fixtures docker_client and notebook_image)
    docker_client_fixture,
    image_present,
    notebook_image_fixture,
    skip_or_fail,
)
from tests.e2e.jupyter import Notebook, _execute_request
from tests.server import ServerProcess, wait_for_status, wait_until

if TYPE_CHECKING:
    import docker
    from docker.models.images import Image

pytestmark = pytest.mark.slow

EVS_BODY = {
    "name": "e2e-docker",
    "profile_id": "Multi-Engine 1.0 (python3)-cpu",
    "flavor": "modelarts.vm.cpu.2u",
    "spec": {"storage": {"type": "evs", "location": {"volume_size": 5}}},
}
DEFAULT_IMAGE = "atelier/mul-kernel-cpu-cp36:2.0.5-B003"
"""The default catalog's image of that profile, which `make image` tags too."""
START_TIMEOUT = 180.0

CPU_QUOTA = """
import os
def _cpus():
    if os.path.exists("/sys/fs/cgroup/cpu.max"):  # cgroup v2
        quota, period = open("/sys/fs/cgroup/cpu.max").read().split()
    else:
        quota = open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read()
        period = open("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read()
    return int(quota) / int(period)
_cpus()
"""
WHO = "import os; (os.getuid(), os.getgid(), os.getcwd())"
TOO_MUCH = "blob = b'x' * (1 << 30); len(blob)"
"""1 GiB, every page written, in a flavor of 512 MiB."""


class DockerServers:
    """Servers on the docker backend, with a label and a network of their own."""

    def __init__(self, factory: Callable[..., ServerProcess], client: docker.DockerClient):
        self.factory = factory
        self.client = client
        self.label = f"test-{uuid.uuid4().hex[:10]}"
        self.started: list[ServerProcess] = []

    def start(self, **env: str) -> ServerProcess:
        server = self.factory(
            backend="docker",
            env={
                "DEMANAGER_INSTANCE_LABEL": self.label,
                "DEMANAGER_DOCKER__NETWORK": self.label,
                "DEMANAGER_DOCKER__PULL": "never",
                "DEMANAGER_START_TIMEOUT_SECONDS": str(START_TIMEOUT),
                **env,
            },
        )
        self.started.append(server)
        return server

    def container(self, instance_id: str) -> Any:
        found = self.client.containers.list(
            all=True, filters={"label": f"{INSTANCE}={instance_id}"}, ignore_removed=True
        )
        return found[0] if found else None

    def volumes(self, instance_id: str) -> list[str]:
        found = self.client.volumes.list(filters={"label": f"{INSTANCE}={instance_id}"})
        return [str(v.name) for v in found]


@pytest.fixture
def docker_servers(
    server_factory: Callable[..., ServerProcess],
    docker_client: docker.DockerClient,
    notebook_image: Image,
) -> Iterator[DockerServers]:
    """Skips (or fails, in CI) without a daemon or the images `make image` builds."""
    if not image_present(docker_client, DEFAULT_IMAGE):
        skip_or_fail(f"{DEFAULT_IMAGE} is missing: run `make image`")
    servers = DockerServers(server_factory, docker_client)
    try:
        yield servers
    finally:
        for server in servers.started:
            server.stop()  # first, or a server would relaunch what is removed below
        remove_labelled(docker_client, servers.label, servers.label)


def test_create_use_stop_start_delete(docker_servers: DockerServers) -> None:
    cpus = int(docker_servers.client.info()["NCPU"])
    if cpus < 2:
        pytest.skip(f"modelarts.vm.cpu.2u needs 2 CPUs; the Docker host has {cpus}")
    server = docker_servers.start()
    with server.client() as api:
        _lifecycle(server, api, docker_servers)


def _lifecycle(server: ServerProcess, api: httpx.Client, docker: DockerServers) -> None:
    created = api.post("", json=EVS_BODY).json()
    instance_id = created["id"]
    assert created["status"] == "CREATING"

    running = wait_for_status(api, instance_id, "RUNNING", START_TIMEOUT)
    url = running["spec"]["annotations"]["url"]
    assert url == f"{server.url}/notebooks/{instance_id}/"
    container = docker.container(instance_id)
    assert container is not None and container.status == "running"
    assert container.labels["io.demanager.managed"] == docker.label
    assert container.attrs["Config"]["Image"] == DEFAULT_IMAGE
    assert docker.volumes(instance_id) == [f"demanager-vol-{instance_id}"]
    with Notebook(url, server.token) as notebook:
        assert notebook.status() == 200
        notebook.write("kept.txt", "survives stop and start")
        assert notebook.execute("1+1") == "2"
        assert notebook.execute(CPU_QUOTA) == "2.0", "the flavor's 2 CPUs, as the cgroup says"
        assert notebook.execute(WHO) == "(1000, 100, '/home/jovyan/work')"

    assert api.post(f"/{instance_id}/action", json={"action": "stop"}).json() == {
        "current_status": "STOPPING",
        "previous_state": "RUNNING",
    }
    wait_for_status(api, instance_id, "STOPPED", START_TIMEOUT)
    assert docker.container(instance_id) is None, "stop removes the container"
    assert docker.volumes(instance_id) == [f"demanager-vol-{instance_id}"], "and keeps the volume"
    with Notebook(url, server.token) as old:
        assert old.refusal() == "ModelArts.6327", "the proxy says it is not running"

    api.post(f"/{instance_id}/action", json={"action": "start"})
    restarted = wait_for_status(api, instance_id, "RUNNING", START_TIMEOUT)
    assert docker.container(instance_id).id != container.id
    with Notebook(restarted["spec"]["annotations"]["url"], server.token) as notebook:
        assert notebook.read("kept.txt") == "survives stop and start"

    api.post(f"/{instance_id}/action", json={"action": "stop"})
    wait_for_status(api, instance_id, "STOPPED", START_TIMEOUT)
    assert api.delete(f"/{instance_id}").json() == {"instance_id": instance_id}
    gone = api.get(f"/{instance_id}")
    assert gone.status_code == 400 and gone.json()["error_code"] == "ModelArts.6309"
    wait_until(
        lambda: docker.container(instance_id) is None and docker.volumes(instance_id) == [],
        "the container and the volume are removed",
        60,
    )


def test_memory_beyond_the_flavor_is_refused(docker_servers: DockerServers) -> None:
    server = docker_servers.start(DEMANAGER_CATALOG_FILE=str(CATALOG))
    body = {
        "name": "e2e-docker-memory",
        "profile_id": PROFILE,
        "flavor": SMALL_FLAVOR,
        "spec": {"storage": {"type": "evs", "location": {"volume_size": 5}}},
    }
    with server.client() as api:
        instance_id = api.post("", json=body).json()["id"]
        running = wait_for_status(api, instance_id, "RUNNING", START_TIMEOUT)
        with Notebook(running["spec"]["annotations"]["url"], server.token) as notebook:
            assert _outcome(notebook, TOO_MUCH) in ("died", "MemoryError")
            assert notebook.status() == 200, "the limit ends the kernel, not the notebook"
        assert api.get(f"/{instance_id}").json()["status"] == "RUNNING"


def _outcome(notebook: Notebook, code: str, timeout: float = 120.0) -> str:
    """Run ``code`` in a fresh kernel: ``result``, the name of the error it raised, or
    ``died`` when the kernel is killed under it."""
    kernel = notebook.http.post("api/kernels", json={"name": "python3"})
    kernel.raise_for_status()
    ws = websocket.create_connection(
        f"{notebook.ws_base}api/kernels/{kernel.json()['id']}/channels",
        timeout=timeout,
        header=[f"X-Auth-Token: {notebook.token}"],
    )
    try:
        msg_id = uuid.uuid4().hex
        ws.send(json.dumps(_execute_request(msg_id, code)))
        while True:
            try:
                message: dict[str, Any] = json.loads(ws.recv())
            except websocket.WebSocketConnectionClosedException:
                return "died"
            kind, content = message["msg_type"], message["content"]
            if kind == "status" and content["execution_state"] in ("restarting", "dead"):
                return "died"
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if kind == "execute_result":
                return "result"
            if kind == "error":
                return str(content["ename"])
    finally:
        ws.close()
