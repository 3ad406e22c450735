"""The Docker backend: one container per instance, from its profile's image.

Each instance gets:

* a container ``demanager-{id}`` (``config.py`` says what it may do), labelled with
  the deployment's ``instance_label`` and the instance's id, which is how a server
  that lost a handle (a crash between launching and storing it) finds and adopts it;
* a named volume ``demanager-vol-{id}`` at the recipe's ``work_dir``: its EVS disk,
  kept by ``stop`` and removed by ``delete``. Docker's local driver cannot cap its
  size: the size asked for is a label, and what it holds is measured at each start,
  while the notebook boots (``Observation.volume_bytes`` once it is READY);
* a random Jupyter token per launch, in the container's environment (where a server
  that adopts the container reads it back); the proxy sends it, callers never see it;
* an address the proxy reaches: its IP on the user-defined bridge network
  ``DockerOptions.network`` (created when missing), at ``recipe.port``; or, with
  ``network_mode: host``, a free port on 127.0.0.1 picked at start, since it then
  shares the host's network (weaker isolation: it reaches every loopback service).

Containers outlive the server on purpose, as the process backend's notebooks do.
``node`` is None: whichever replica reaches the daemon sees every container, so any
replica may drive any instance; replicas must then share one daemon (or each a
``DEMANAGER_INSTANCE_LABEL`` of its own, for deployments that must not meet).
Every SDK call runs off the event loop (``daemon.Daemon.run``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import socket
import time
from typing import Any

import httpx
from docker import DockerClient
from docker.errors import APIError, NotFound
from docker.models.containers import Container

from demanager.backends import jupyter
from demanager.backends.base import BackendContext, Handle, LaunchSpec, recipe_of
from demanager.backends.docker import daemon
from demanager.backends.docker.config import (
    INSTANCE,
    LAUNCHED_AT,
    LOOPBACK,
    MANAGED,
    PORT,
    Bind,
    Launch,
    base_url,
    check_user,
    container_kwargs,
    numeric_user,
    volume_labels,
    volume_name,
)
from demanager.backends.options import ContainerRecipe, DockerOptions
from demanager.backends.sandbox import Account
from demanager.domain.catalog import Flavor
from demanager.domain.instance import DEFAULT_VOLUME_GB, Endpoint, FailedReason, Storage
from demanager.domain.planning import Observation, Workload
from demanager.errors import BackendError, PermanentBackendError, TransientBackendError
from demanager.objectstore.mounts import bucket_mounts

log = logging.getLogger(__name__)

ALIVE = ("running", "paused", "restarting")
NOT_EXECUTABLE = (126, 127)
"""Exit codes of a command that cannot be run (not executable, not found): tini's and
the shells' convention. A relaunch would fail alike."""


class DockerHandle(Handle):
    container_id: str
    token: str
    port: int
    base_url: str
    host_network: bool = False


def missing_image(image: str) -> str:
    return (
        f"the image {image} is not on the Docker host and pulling is off "
        "(DEMANAGER_DOCKER__PULL=never): build it with `make image` or pull it"
    )


class DockerBackend:
    name = "docker"
    options_type = DockerOptions
    handle_type = DockerHandle
    recipe_type = ContainerRecipe

    def __init__(self, options: DockerOptions, context: BackendContext) -> None:
        self.node: str | None = None
        self._options = options
        self._label = context.instance_label
        self._mounts = context.host_mounts
        self._daemon = daemon.Daemon(options.host, options.request_timeout_seconds)
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(2.0, connect=0.5))
        self._cpus: int | None = None
        self._usage: dict[str, asyncio.Task[int | None]] = {}
        """What each container launched here found on its volume, measured (``du`` in the
        container) while its notebook boots, by container id."""

    @property
    def _network(self) -> str | None:
        """The bridge network notebooks join; None with host networking."""
        return self._options.network if self._options.network_mode == "bridge" else None

    # --- the contract -------------------------------------------------------------------

    async def start(self, spec: LaunchSpec) -> DockerHandle:
        began = time.monotonic()
        instance_id = spec.instance_id
        recipe = recipe_of(ContainerRecipe, self.name, spec.profile)
        check_user(recipe.user)
        binds = await self._synced_buckets(spec, recipe)
        image = recipe.image or spec.profile.image
        network = self._network
        try:
            await self._check_cpus(spec.flavor)
            await self._ensure_image(image)
            await self._remove(instance_id, None, grace_seconds=0)
            if network is not None:
                await self._daemon.run(daemon.ensure_network, network, self._label)
            size_gb = spec.storage.location.volume_size or DEFAULT_VOLUME_GB
            labels = volume_labels(self._label, instance_id, spec.project_id, size_gb)
            # Made for obs too: the volume is cheap, and delete expects one.
            await self._daemon.run(daemon.ensure_volume, volume_name(instance_id), labels)
        except APIError as exc:
            raise _refusal(exc, f"prepare {instance_id}") from exc
        launch = Launch(
            instance_id=instance_id,
            project_id=spec.project_id,
            image=image,
            recipe=recipe,
            resources=spec.flavor.resources,
            token=secrets.token_hex(16),
            port=recipe.port if network is not None else _free_port(),
            label=self._label,
            launched_at=spec.now_ms + int((time.monotonic() - began) * 1000),
            network=network,
            runtime=self._options.runtime,
            pids_limit=self._options.pids_limit,
            gpus=spec.gpus,
            binds=binds,
        )
        kwargs = container_kwargs(launch)
        try:
            container = await self._daemon.run(_create, kwargs)
        except NotFound as exc:  # the image went away since it was checked
            raise PermanentBackendError(
                f"the image {image} is gone: {daemon.refused(exc)}"
            ) from exc
        except APIError as exc:
            raise _refusal(exc, f"create the container of {instance_id}") from exc
        try:
            await self._daemon.call(container.start)
        except APIError as exc:
            # Left in place, "created" with the daemon's reason: observe reports it too.
            raise PermanentBackendError(
                f"the notebook's container cannot start: {daemon.refused(exc)}"
            ) from exc
        log.info("%s: container %s launched from %s", instance_id, container.short_id, image)
        measuring = asyncio.create_task(
            self._daemon.call(daemon.volume_usage, container, recipe.work_dir, recipe.user)
        )
        measuring.add_done_callback(_retrieved)
        self._usage[str(container.id)] = measuring
        return DockerHandle(
            container_id=str(container.id),
            token=launch.token,
            port=launch.port,
            base_url=base_url(instance_id),
            host_network=network is None,
            launched_at=launch.launched_at,
        )

    async def observe(
        self, instance_id: str, handle: DockerHandle | None
    ) -> Observation[DockerHandle]:
        try:
            if handle is not None:
                container = await self._daemon.run(daemon.container_by_id, handle.container_id)
            else:
                found = await self._daemon.run(daemon.instance_containers, self._label, instance_id)
                container = found[0] if found else None
        except APIError as exc:
            raise _refusal(exc, f"inspect the container of {instance_id}") from exc
        if container is None:
            return Observation(Workload.ABSENT)
        state = container.attrs.get("State") or {}
        if state.get("Status") not in ALIVE:
            return Observation(Workload.ABSENT, failure=await self._failure(container, state))
        adopted = None if handle is not None else _adopt(container, instance_id)
        handle = handle or adopted
        if handle is None:  # not launched by this backend: a start replaces it
            return Observation(Workload.ABSENT)
        seen: Observation[DockerHandle] = Observation(
            Workload.BOOTING,
            handle.launched_at,
            adopted,
            warning=self._mounts.warning(instance_id) if self._mounts is not None else None,
        )
        endpoint = self._endpoint(container, handle)
        if state.get("Status") != "running" or endpoint is None:
            return seen
        if not await jupyter.answers(self._http, endpoint):
            return seen
        used = await self._volume_bytes(handle.container_id)
        return dataclasses.replace(
            seen, workload=Workload.READY, endpoint=endpoint, volume_bytes=used
        )

    async def stop(self, instance_id: str, handle: DockerHandle | None) -> None:
        try:
            await self._remove(instance_id, handle, self._options.stop_timeout_seconds)
        except APIError as exc:
            raise _refusal(exc, f"remove the container of {instance_id}") from exc
        if self._mounts is not None:
            await self._mounts.finish(instance_id)  # the container is gone: every write is in

    async def _synced_buckets(self, spec: LaunchSpec, recipe: ContainerRecipe) -> tuple[Bind, ...]:
        """The instance's buckets synced into host folders that the container's user
        owns (read-write) or cannot write (read-only), bound into the container. They
        are folders of this host: the daemon must run here (a local socket)."""
        if not bucket_mounts(spec.storage, spec.extend_storage):
            return ()
        if self._mounts is None:
            raise PermanentBackendError(
                "object storage (obs, obsfs) needs S3 on the docker backend "
                "(DEMANAGER_S3__…)", "ModelArts.6324",
            )
        ids = numeric_user(recipe.user)
        if ids is None:
            raise PermanentBackendError(
                f"launch.docker.user {recipe.user!r}: object storage needs the notebook's "
                "numeric uid:gid, to own its synced buckets"
            )
        owner = Account(name=recipe.user, uid=ids[0], gid=ids[1])
        prepared = await self._mounts.prepare(spec, owner)
        return tuple(Bind(str(p.folder), p.mount.mount_path, p.mount.read_only) for p in prepared)

    async def delete(self, instance_id: str, handle: DockerHandle | None, storage: Storage) -> None:
        await self.stop(instance_id, handle)
        if self._mounts is not None:
            await self._mounts.remove(instance_id)
        try:
            await self._daemon.run(daemon.remove_volume, volume_name(instance_id))
        except APIError as exc:
            raise _refusal(exc, f"remove the volume of {instance_id}") from exc

    async def check(self) -> list[str]:
        """The daemon (reachable, recent enough), the network (a bridge, if it exists
        yet) and the runtime."""
        try:
            info = await self._daemon.run(_info)
            problems = []
            network = self._network
            if network is not None:
                problems += await self._daemon.run(_network_problems, network)
        except BackendError as exc:
            return [exc.message]
        except APIError as exc:
            return [f"the Docker daemon at {self._daemon.address} refused: {daemon.refused(exc)}"]
        runtime = self._options.runtime
        if runtime and runtime not in (info.get("Runtimes") or {}):
            problems.append(
                f"the Docker daemon has no runtime {runtime!r} (DEMANAGER_DOCKER__RUNTIME); "
                f"it has: {', '.join(sorted(info.get('Runtimes') or {}))}"
            )
        return problems

    async def missing_images(self, images: list[str]) -> list[str]:
        """One line per image of ``images`` the daemon does not hold, for
        ``demanager doctor`` (which names the catalog's images). A daemon that does not
        answer gives no line here: ``check`` already says so."""
        lines = []
        try:
            for image in dict.fromkeys(images):
                if await self._daemon.run(daemon.has_image, image):
                    continue
                if self._options.pull == "never":
                    lines.append(missing_image(image))
                else:
                    lines.append(
                        f"the image {image} is not on the Docker host: the first start that "
                        "runs it will pull it (build it with `make image` if no registry has it)"
                    )
        except BackendError:
            return lines
        except APIError as exc:
            return [*lines, f"the Docker daemon refused an image lookup: {daemon.refused(exc)}"]
        return lines

    async def close(self) -> None:
        # Containers outlive the server on purpose: a restarted server adopts them.
        for task in self._usage.values():
            task.cancel()
        await self._http.aclose()
        await self._daemon.close()

    # --- helpers ------------------------------------------------------------------------

    async def _check_cpus(self, flavor: Flavor) -> None:
        if self._cpus is None:
            info = await self._daemon.run(_info)
            self._cpus = int(info.get("NCPU") or 0)
        wanted = flavor.resources.cpus
        if self._cpus and wanted > self._cpus:
            raise PermanentBackendError(
                f"the flavor {flavor.name} asks for {wanted:g} CPUs and the Docker host has "
                f"only {self._cpus}"
            )

    async def _ensure_image(self, image: str) -> None:
        policy = self._options.pull
        if policy != "always" and await self._daemon.run(daemon.has_image, image):
            return
        if policy == "never":
            raise PermanentBackendError(missing_image(image))
        timeout = self._options.pull_timeout_seconds
        deadline = time.monotonic() + timeout
        log.info("pulling %s", image)
        try:
            # The worker thread checks the deadline at each progress message; this one
            # returns at the deadline even if the daemon goes silent.
            await asyncio.wait_for(self._daemon.run(daemon.pull, image, deadline), timeout)
        except TimeoutError as exc:
            raise daemon.PullTimedOut(image) from exc
        except APIError as exc:
            raise PermanentBackendError(
                f"cannot pull the image {image}: {daemon.refused(exc)}"
            ) from exc

    async def _remove(
        self, instance_id: str, handle: DockerHandle | None, grace_seconds: int
    ) -> None:
        """Stop and remove every container of the instance: the handle's, and any other
        labelled with its id (a launch whose handle was never stored)."""

        def remove(client: DockerClient) -> list[str]:
            found = daemon.instance_containers(client, self._label, instance_id)
            if handle is not None and all(c.id != handle.container_id for c in found):
                own = daemon.container_by_id(client, handle.container_id)
                found += [own] if own is not None else []
            for container in found:
                daemon.remove_container(container, grace_seconds)
            return [str(container.id) for container in found]

        for container_id in await self._daemon.run(remove):
            measuring = self._usage.pop(container_id, None)
            if measuring is not None:
                measuring.cancel()

    async def _failure(self, container: Container, state: dict[str, Any]) -> FailedReason | None:
        """Why a container that is not running can never run as launched: the daemon could
        not start it (``State.Error``), or its command cannot be executed (exit 126 or 127,
        with the last line it wrote). Any other exit (a crash, a kill, an OOM) is left to
        the engine, which relaunches it."""
        error = state.get("Error")
        if error:
            return FailedReason("ModelArts.6361", f"The notebook's container cannot run: {error}")
        code = state.get("ExitCode")
        if code not in NOT_EXECUTABLE:
            return None
        try:
            said = await self._daemon.call(daemon.last_words, container)
        except APIError:
            said = ""
        reason = f"The notebook's command cannot be run (exit code {code})"
        return FailedReason("ModelArts.6361", f"{reason}: {said}" if said else f"{reason}.")

    async def _volume_bytes(self, container_id: str) -> int | None:
        """What the volume held when the container was launched here (None for a container
        adopted from another server): measured while the notebook booted, so it is
        normally ready when the notebook is, and waited for otherwise (it is bounded)."""
        task = self._usage.get(container_id)
        if task is None:
            return None
        await asyncio.wait({task})  # neither raises what the task raised, nor cancels it
        if task.cancelled() or task.exception() is not None:
            return None
        return task.result()

    def _endpoint(self, container: Container, handle: DockerHandle) -> Endpoint | None:
        if handle.host_network:
            host: str | None = LOOPBACK
        else:
            host = daemon.address_of(container, self._options.network)
        if host is None:
            return None
        return Endpoint(
            host=host,
            port=handle.port,
            base_path=handle.base_url,
            headers={"Authorization": f"token {handle.token}"},
        )


def _retrieved(task: asyncio.Task[int | None]) -> None:
    """Mark a measurement's failure as seen (the daemon's trouble is reported by the
    calls that need it), so asyncio does not log it as never retrieved."""
    if not task.cancelled():
        task.exception()


def _adopt(container: Container, instance_id: str) -> DockerHandle | None:
    """The handle of a container found by its labels, or None when it lacks what this
    backend puts on its containers."""
    labels = container.labels
    token = daemon.token_of(container)
    if token is None or labels.get(INSTANCE) != instance_id or MANAGED not in labels:
        return None
    try:
        port = int(labels[PORT])
        launched_at = int(labels[LAUNCHED_AT])
    except (KeyError, ValueError):
        return None
    mode = (container.attrs.get("HostConfig") or {}).get("NetworkMode")
    return DockerHandle(
        container_id=str(container.id),
        token=token,
        port=port,
        base_url=base_url(instance_id),
        host_network=mode == "host",
        launched_at=launched_at,
    )


def _create(client: DockerClient, kwargs: dict[str, Any]) -> Container:
    return client.containers.create(**kwargs)


def _info(client: DockerClient) -> dict[str, Any]:
    info: dict[str, Any] = client.info()
    return info


def _network_problems(client: DockerClient, name: str) -> list[str]:
    """A network that is not a bridge. A missing one is not a problem: the first start
    creates it (``demanager doctor`` counts every line as one)."""
    driver = daemon.network_driver(client, name)
    return [] if driver in (None, "bridge") else [daemon.not_a_bridge(name, driver)]


def _refusal(exc: APIError, doing: str) -> BackendError:
    """A request the daemon refused: permanent when the request itself is wrong (4xx but
    a conflict or a not-found, which a retry can outlive), else transient."""
    said = daemon.refused(exc)
    status = exc.status_code or 500
    if 400 <= status < 500 and status not in (404, 409):
        return PermanentBackendError(f"the Docker daemon refused to {doing}: {said}")
    return TransientBackendError(
        f"the Docker daemon could not {doing}: {said}", daemon.RETRY_SECONDS
    )


def _free_port() -> int:
    """A free port on the host's loopback (host networking: the notebook binds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])
