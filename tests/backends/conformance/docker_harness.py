"""The Docker backend in the conformance suite: workloads are containers.

Each harness labels what its servers create with an ``instance_label`` of its own and
puts their notebooks on a network of its own, so test workers sharing one daemon never
see, or clean up, each other's containers.
"""

from __future__ import annotations

import contextlib
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from demanager.backends.base import Backend, BackendContext
from demanager.backends.options import DockerOptions
from tests.backends.conformance.harness import Harness
from tests.docker_env import (
    CLIENT_TIMEOUT_S,
    MANAGED_LABEL,
    NOTEBOOK_IMAGE,
    docker_host_reason,
    image_present,
    skip_or_fail,
)

if TYPE_CHECKING:
    import docker
    from docker.models.containers import Container

INSTANCE = "io.demanager.instance"


def docker_client() -> docker.DockerClient:
    """A client of the daemon ``docker.from_env()`` finds; skips (or fails, when the run
    requires Docker) without one, or without the notebook image."""
    reason = docker_host_reason()
    if reason is not None:
        skip_or_fail(reason)
    import docker

    client = docker.from_env(timeout=CLIENT_TIMEOUT_S)
    if not image_present(client, NOTEBOOK_IMAGE):
        client.close()
        skip_or_fail(f"{NOTEBOOK_IMAGE} is missing: run `make image`")
    return client


class DockerHarness(Harness):
    backend = "docker"
    broken_reason = "is not on the Docker host"

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        suffix = uuid.uuid4().hex[:10]
        self.label = f"test-{suffix}"
        self.network = f"dm-test-{suffix}"
        self._client: docker.DockerClient | None = None

    @property
    def client(self) -> docker.DockerClient:
        assert self._client is not None, "setup() first"
        return self._client

    def setup(self) -> None:
        self._client = docker_client()

    def env(self) -> dict[str, str]:
        return {
            "DEMANAGER_INSTANCE_LABEL": self.label,
            "DEMANAGER_DOCKER__NETWORK": self.network,
            "DEMANAGER_DOCKER__PULL": "never",
        }

    def options(self) -> DockerOptions:
        return DockerOptions(network=self.network, pull="never")

    def make_backend(self) -> Backend:
        from demanager.backends.docker.backend import DockerBackend

        context = BackendContext(data_dir=self.workdir / "direct", instance_label=self.label)
        return DockerBackend(self.options(), context)

    def _containers(self, instance_id: str) -> list[Container]:
        return self.client.containers.list(
            all=True, filters={"label": f"{INSTANCE}={instance_id}"}, ignore_removed=True
        )

    def workload_id(self, instance_id: str) -> str | None:
        running = [c for c in self._containers(instance_id) if c.status == "running"]
        return running[0].id if running else None

    def kill_workload(self, instance_id: str) -> None:
        running = [c for c in self._containers(instance_id) if c.status == "running"]
        assert running, f"{instance_id} has no container to kill"
        running[0].kill()

    def leftovers(self, instance_id: str) -> list[str]:
        left = [f"container {c.name} ({c.status})" for c in self._containers(instance_id)]
        volumes = self.client.volumes.list(filters={"label": f"{INSTANCE}={instance_id}"})
        left += [f"volume {v.name}" for v in volumes]
        return left

    def teardown(self) -> None:
        if self._client is None:
            return
        remove_labelled(self._client, self.label, self.network)
        self._client.close()
        self._client = None


def remove_labelled(client: docker.DockerClient, label: str, network: str | None = None) -> None:
    """Remove every container, volume and network labelled ``io.demanager.managed=label``,
    and the network ``network``."""
    import docker

    labelled = {"label": f"{MANAGED_LABEL}={label}"}
    for container in client.containers.list(all=True, filters=labelled, ignore_removed=True):
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)
    for volume in client.volumes.list(filters=labelled):
        with contextlib.suppress(docker.errors.NotFound):
            volume.remove(force=True)
    networks = client.networks.list(filters=labelled)
    networks += [n for n in client.networks.list(names=[network]) if n.name == network]
    for found in networks:
        with contextlib.suppress(docker.errors.NotFound):
            found.remove()
