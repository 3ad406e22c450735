"""The Docker daemon, reached off the event loop, and the few things done on it.

Every call of the (blocking) Docker SDK runs in a worker thread through
``Daemon.run``, which turns "the daemon does not answer" into a
``TransientBackendError`` naming the address tried. The client is built by the first
call, not when the server starts: a daemon that is down then only delays the
instances, and the API version is negotiated with the daemon that answers
(``MIN_API_VERSION`` at least).

The helpers below it are blocking functions of a client, for ``Daemon.run``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import threading
import time
from collections.abc import Callable
from typing import Concatenate, ParamSpec, TypeVar

import docker
import requests
from docker.errors import APIError, DockerException, NotFound
from docker.models.containers import Container
from docker.utils import parse_repository_tag

from demanager.backends.docker.config import INSTANCE, MANAGED, TOKEN_ENV
from demanager.errors import PermanentBackendError, TransientBackendError

P = ParamSpec("P")
T = TypeVar("T")

MIN_API_VERSION = (1, 40)
"""Docker 19.03: the oldest daemon that takes device requests (GPUs)."""
RETRY_SECONDS = 5.0
POOL_SIZE = 32
"""Connections kept to the daemon: as many as worker threads may call it at once (the
default executor's most), so none is opened and dropped per call under load."""
ICC = "com.docker.network.bridge.enable_icc"
USAGE_SECONDS = 3
"""How long measuring a volume may take (``du`` in the container, while the notebook
boots) before it is left unmeasured: a huge volume holds the notebook's first READY
observation up by this much at most."""


class Daemon:
    """One client of one daemon, built on first use, shared by every worker thread."""

    def __init__(self, host: str | None, timeout: float) -> None:
        self._host = host
        self._timeout = timeout
        self._client: docker.DockerClient | None = None
        self._lock = threading.Lock()
        self._closed = False

    @property
    def address(self) -> str:
        if self._host:
            return self._host
        return os.environ.get("DOCKER_HOST") or "the local socket (DOCKER_HOST is unset)"

    async def run(
        self,
        call: Callable[Concatenate[docker.DockerClient, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """``call(client, *args, **kwargs)`` in a worker thread. Errors the daemon answers
        with (``APIError``: not found, conflict…) are the caller's to read; not reaching
        it is a ``TransientBackendError``."""
        return await self.call(lambda: call(self._connected(), *args, **kwargs))

    async def call(self, call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``call(*args, **kwargs)`` (a method of a container already fetched) in a worker
        thread, its errors read as ``run``'s."""
        try:
            return await asyncio.to_thread(call, *args, **kwargs)
        except APIError:
            raise
        except (DockerException, requests.RequestException) as exc:
            raise TransientBackendError(
                f"the Docker daemon at {self.address} does not answer: {exc}", RETRY_SECONDS
            ) from exc

    def _connected(self) -> docker.DockerClient:
        with self._lock:
            if self._closed:
                raise DockerException("the backend is closed")
            if self._client is None:
                self._client = self._connect()
            return self._client

    def _connect(self) -> docker.DockerClient:
        environment = dict(os.environ)
        if self._host:
            environment["DOCKER_HOST"] = self._host  # TLS settings still come from DOCKER_*
        client = docker.from_env(
            version="auto",
            timeout=math.ceil(self._timeout),
            environment=environment,
            max_pool_size=POOL_SIZE,
        )
        version = client.api.api_version
        if api_version(version) < MIN_API_VERSION:
            client.close()
            raise TooOld(version)
        return client

    async def close(self) -> None:
        with self._lock:
            client, self._client, self._closed = self._client, None, True
        if client is not None:
            await asyncio.to_thread(client.close)


class TooOld(PermanentBackendError):
    def __init__(self, version: str) -> None:
        wanted = ".".join(map(str, MIN_API_VERSION))
        super().__init__(
            f"the Docker daemon speaks API {version}; demanager needs {wanted} or newer "
            "(Docker 19.03 or later)"
        )


def api_version(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split("."))
    except ValueError:
        return (0,)


def refused(exc: APIError) -> str:
    """What the daemon said, in one line."""
    said = exc.explanation or str(exc)
    return " ".join(str(said).split())


# --- blocking helpers, run through Daemon.run ---------------------------------------


def instance_containers(
    client: docker.DockerClient, label: str, instance_id: str
) -> list[Container]:
    """Every container of the instance made by this deployment, newest first."""
    found = client.containers.list(
        all=True,
        filters={"label": [f"{MANAGED}={label}", f"{INSTANCE}={instance_id}"]},
        ignore_removed=True,
    )
    return sorted(found, key=lambda c: str(c.attrs.get("Created", "")), reverse=True)


def container_by_id(client: docker.DockerClient, container_id: str) -> Container | None:
    try:
        return client.containers.get(container_id)
    except NotFound:
        return None


def remove_container(container: Container, grace_seconds: int) -> None:
    """Stop (SIGTERM through tini, then SIGKILL after ``grace_seconds``) and remove;
    what is already gone, or on its way out, is fine."""
    with contextlib.suppress(NotFound):
        try:
            container.stop(timeout=grace_seconds)
        except APIError as exc:
            if exc.status_code != 409:  # a removal already under way
                raise
        try:
            container.remove(force=True)
        except APIError as exc:
            if exc.status_code != 409 or "in progress" not in refused(exc):
                raise


def remove_volume(client: docker.DockerClient, name: str) -> None:
    try:
        client.volumes.get(name).remove(force=True)
    except NotFound:
        return


def ensure_volume(client: docker.DockerClient, name: str, labels: dict[str, str]) -> None:
    try:
        client.volumes.get(name)
    except NotFound:
        client.volumes.create(name=name, driver="local", labels=labels)


def ensure_network(client: docker.DockerClient, name: str, label: str) -> None:
    """The bridge network notebooks join; created when missing, with traffic between its
    containers off (``enable_icc``: one notebook cannot reach another's server). A
    network that exists is used as it is, if it is a bridge."""
    driver = network_driver(client, name)
    if driver == "bridge":
        return
    if driver is not None:
        raise PermanentBackendError(not_a_bridge(name, driver))
    try:
        client.networks.create(
            name,
            driver="bridge",
            labels={MANAGED: label},
            options={ICC: "false"},
            check_duplicate=True,
        )
    except APIError as exc:
        if exc.status_code != 409:  # created meanwhile, by another replica
            raise


def network_driver(client: docker.DockerClient, name: str) -> str | None:
    """The driver of the network ``name``; None when there is no such network."""
    try:
        return str(client.networks.get(name).attrs.get("Driver"))
    except NotFound:
        return None


def not_a_bridge(name: str, driver: str) -> str:
    return (
        f"the Docker network {name!r} is a {driver} network, not a bridge: set "
        "DEMANAGER_DOCKER__NETWORK to another name, or remove it"
    )


def has_image(client: docker.DockerClient, image: str) -> bool:
    try:
        client.images.get(image)
    except NotFound:
        return False
    return True


def pull(client: docker.DockerClient, image: str, deadline: float) -> None:
    """Pull ``image``, giving up at ``deadline`` (monotonic); raises
    ``PermanentBackendError`` with the daemon's reason when it fails. The daemon sends
    progress as it goes, so the deadline is checked often; a daemon that goes silent is
    left to the caller's own timeout."""
    repository, tag = parse_repository_tag(image)
    stream = client.api.pull(repository, tag=tag or "latest", stream=True, decode=True)
    for message in stream:
        if "error" in message:
            raise PermanentBackendError(f"cannot pull the image {image}: {message['error']}")
        if time.monotonic() > deadline:
            stream.close()
            raise PullTimedOut(image)


class PullTimedOut(PermanentBackendError):
    def __init__(self, image: str) -> None:
        super().__init__(
            f"pulling the image {image} took longer than DEMANAGER_DOCKER__PULL_TIMEOUT_SECONDS "
            "allows: pull it on the Docker host beforehand, or raise the timeout"
        )


def token_of(container: Container) -> str | None:
    """The Jupyter token a container was launched with (its environment)."""
    prefix = f"{TOKEN_ENV}="
    for item in container.attrs.get("Config", {}).get("Env") or []:
        if item.startswith(prefix):
            return str(item[len(prefix) :])
    return None


def address_of(container: Container, network: str) -> str | None:
    """The container's IP address on ``network`` (else on the first network it has one
    on: a network renamed in the settings since it was launched)."""
    networks = container.attrs.get("NetworkSettings", {}).get("Networks") or {}
    ordered = [networks.get(network) or {}, *networks.values()]
    for endpoint in ordered:
        if endpoint and endpoint.get("IPAddress"):
            return str(endpoint["IPAddress"])
    return None


def last_words(container: Container) -> str:
    """The last line a container wrote (its logs), at most 300 characters."""
    output = container.logs(stdout=True, stderr=True, tail=5)
    lines = [line.strip() for line in output.decode(errors="replace").splitlines()]
    said = [line for line in lines if line]
    return said[-1][:300] if said else ""


def volume_usage(container: Container, path: str, user: str) -> int | None:
    """Bytes stored under ``path`` in the running container, as ``du`` counts disk
    blocks (the process backend counts the same way); None when it cannot tell within
    ``USAGE_SECONDS``."""
    command = ["timeout", "-s", "KILL", str(USAGE_SECONDS), "du", "-s", "-x", "-B1", path]
    try:
        result = container.exec_run(command, user=user, stdout=True, stderr=False)
    except APIError:
        return None
    output = result.output if isinstance(result.output, bytes) else b""
    first = output.split(maxsplit=1)[:1]
    return int(first[0]) if first and first[0].isdigit() else None
