"""Docker for the tests: whether a daemon answers, and fixtures that need one.

Without a daemon (or without the notebook image) the tests that need it skip, with
the reason; CI sets ``DEMANAGER_TEST_REQUIRE_DOCKER=1`` so that they fail instead
and a broken daemon cannot pass as a green run. The daemon is the one
``docker.from_env()`` finds: ``DOCKER_HOST``, else the default socket.

Use the fixtures ``docker_client`` and ``notebook_image`` by importing their functions
into a test module (the names differ so that the parameters do not shadow them)::

    from tests.docker_env import docker_client_fixture, notebook_image_fixture  # noqa: F401
"""

from __future__ import annotations

import gc
import os
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

if TYPE_CHECKING:
    import docker
    from docker.models.images import Image

REQUIRE_DOCKER_ENV = "DEMANAGER_TEST_REQUIRE_DOCKER"
NOTEBOOK_IMAGE = "demanager/notebook:latest"
MANAGED_LABEL = "io.demanager.managed"
"""The label every container, volume and network demanager makes carries; tests give
it the value ``test`` on what they make themselves, and CI fails on any left behind."""

PING_TIMEOUT_S = 5
CLIENT_TIMEOUT_S = 120


def docker_required() -> bool:
    """Whether a missing daemon or image fails the tests rather than skipping them."""
    return os.environ.get(REQUIRE_DOCKER_ENV, "").strip() not in ("", "0")


def _daemon_address() -> str:
    return os.environ.get("DOCKER_HOST") or "the default socket (DOCKER_HOST is unset)"


def docker_host_reason(timeout: int = PING_TIMEOUT_S) -> str | None:
    """None when a Docker daemon answers a ping; else why not, in one line."""
    try:
        import docker
        import requests
    except ImportError as exc:
        return f"the docker Python SDK is missing ({exc})"
    # The SDK leaves the socket of a failed connect unclosed; under the suite's
    # filterwarnings=error its ResourceWarning would turn a skip into an error.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        reason = _ping(docker, requests, timeout)
        if reason is not None:
            gc.collect()
    return reason


def _ping(docker: Any, requests: Any, timeout: int) -> str | None:
    try:
        client = docker.from_env(timeout=timeout)
    except docker.errors.DockerException as exc:
        return f"no Docker daemon answers at {_daemon_address()}: {exc}"
    try:
        client.ping()
    except (docker.errors.DockerException, requests.RequestException) as exc:
        return f"the Docker daemon at {_daemon_address()} does not answer a ping: {exc}"
    finally:
        client.close()
    return None


def skip_or_fail(reason: str) -> NoReturn:
    """Skip with ``reason``, or fail with it when the run requires Docker."""
    if docker_required():
        pytest.fail(f"{reason} ({REQUIRE_DOCKER_ENV}=1)", pytrace=False)
    pytest.skip(reason)


def image_present(client: docker.DockerClient, tag: str) -> bool:
    """Whether the daemon holds an image by that name (nothing is pulled)."""
    import docker

    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


@pytest.fixture(scope="session", name="docker_client")
def docker_client_fixture() -> Iterator[docker.DockerClient]:
    """A client of the daemon ``docker.from_env()`` finds; skips (or fails) without one."""
    reason = docker_host_reason()
    if reason is not None:
        skip_or_fail(reason)
    import docker

    client = docker.from_env(timeout=CLIENT_TIMEOUT_S)
    yield client
    client.close()


@pytest.fixture(scope="session", name="notebook_image")
def notebook_image_fixture(docker_client: docker.DockerClient) -> Image:
    """The image ``make image`` builds; skips (or fails) when it has not been built."""
    if not image_present(docker_client, NOTEBOOK_IMAGE):
        skip_or_fail(f"{NOTEBOOK_IMAGE} is missing: run `make image`")
    return docker_client.images.get(NOTEBOOK_IMAGE)
