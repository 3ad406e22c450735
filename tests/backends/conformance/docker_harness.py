"""The Docker backend in the conformance suite: workloads are containers.

Each harness labels what its servers create with an ``instance_label`` of its own and
puts their notebooks on a network of its own, so test workers sharing one daemon never
see, or clean up, each other's containers.
"""

from __future__ import annotations

import contextlib
import gc
import os
import uuid
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import pytest

from demanager.backends.base import Backend, BackendContext
from demanager.backends.options import DockerOptions
from tests.backends.conformance.harness import Harness

if TYPE_CHECKING:
    import docker
    from docker.models.containers import Container

REQUIRE_DOCKER_ENV = "DEMANAGER_TEST_REQUIRE_DOCKER"
NOTEBOOK_IMAGE = "demanager/notebook:latest"
MANAGED = "io.demanager.managed"
INSTANCE = "io.demanager.instance"


def docker_required() -> bool:
    """Whether a missing daemon or image fails the tests rather than skipping them."""
    return os.environ.get(REQUIRE_DOCKER_ENV, "").strip() not in ("", "0")


def skip_or_fail(reason: str) -> NoReturn:
    if docker_required():
        pytest.fail(f"{reason} ({REQUIRE_DOCKER_ENV}=1)", pytrace=False)
    pytest.skip(reason)


def docker_client() -> docker.DockerClient:
    """A client of the daemon ``docker.from_env()`` finds; skips (or fails) without one,
    or without the notebook image."""
    import docker
    import requests

    address = os.environ.get("DOCKER_HOST") or "the default socket (DOCKER_HOST is unset)"
    # The SDK leaves the socket of a failed connect unclosed; under the suite's
    # filterwarnings=error its ResourceWarning would turn a skip into an error.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            client = docker.from_env(timeout=120)
            client.ping()
        except (docker.errors.DockerException, requests.RequestException) as exc:
            gc.collect()
            skip_or_fail(f"no Docker daemon answers at {address}: {exc}")
    try:
        client.images.get(NOTEBOOK_IMAGE)
    except docker.errors.ImageNotFound:
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

    labelled = {"label": f"{MANAGED}={label}"}
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
