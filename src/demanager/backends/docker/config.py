"""What a notebook's container is made of, as a pure function of the launch.

``container_kwargs`` returns the keyword arguments of ``containers.create``, so they
are tested without a daemon (as KubeSpawner tests its manifests), and this is the one
place that says what a notebook may do on the Docker host:

* it runs as the recipe's user, never root (refused here, group included), with no
  capabilities, ``no-new-privileges``, and an init process (tini) that reaps zombies
  and hands SIGTERM on to Jupyter;
* its only mount is the instance's named volume at ``work_dir``: no host path, no
  Docker socket; the rest of its file system is the image's, writable, and gone at
  stop;
* CPUs (``nano_cpus``), memory (``mem_limit`` = ``memswap_limit``: no swap) and GPUs
  (a device request: of the GPUs the store assigned, when it assigns them, else of the
  flavor's number) come from the flavor, PIDs from the settings;
* its log is capped, since a notebook's code can write to the server's stdout;
* on a bridge network it listens on all of its own interfaces at ``recipe.port``; with
  host networking it shares the host's interfaces, so it listens on 127.0.0.1 only, at
  a port picked for it.
"""

from __future__ import annotations

import math
import posixpath
from dataclasses import dataclass
from typing import Any

from docker.types import DeviceRequest, LogConfig, Mount

from demanager.backends.options import ContainerRecipe
from demanager.domain.catalog import Resources
from demanager.domain.instance import WORK_DIR
from demanager.errors import PermanentBackendError

MANAGED = "io.demanager.managed"
"""On every container, volume and network the backend creates: the deployment's
``instance_label``, so two deployments sharing a daemon never touch each other's."""
INSTANCE = "io.demanager.instance"
PROJECT = "io.demanager.project"
LAUNCHED_AT = "io.demanager.launched-at"
PORT = "io.demanager.port"
"""The port the notebook listens on (a handle's field, read back on adoption)."""
SIZE_GB = "io.demanager.size-gb"
"""A volume's size as asked for: Docker's local driver cannot enforce it."""
TOKEN_ENV = "JUPYTER_TOKEN"
LOOPBACK = "127.0.0.1"
LOG_OPTIONS = {"max-size": "10m", "max-file": "3"}
IP_FLAGS = ("--ServerApp.ip=", "--ip=")


def container_name(instance_id: str) -> str:
    return f"demanager-{instance_id}"


def volume_name(instance_id: str) -> str:
    return f"demanager-vol-{instance_id}"


def base_url(instance_id: str) -> str:
    return f"/notebooks/{instance_id}/"


def cpus_text(cpus: float) -> str:
    """The ``{cpus}`` placeholder: a whole number of CPUs, at least one (what
    ``OMP_NUM_THREADS`` and the like accept)."""
    return str(max(1, math.ceil(cpus)))


@dataclass(frozen=True)
class Launch:
    """Everything one container's configuration depends on."""

    instance_id: str
    project_id: str
    image: str
    recipe: ContainerRecipe
    resources: Resources
    token: str
    port: int
    """Where Jupyter listens: ``recipe.port`` on a bridge, a free host port otherwise."""
    label: str
    """The deployment's ``instance_label``."""
    launched_at: int
    network: str | None
    """The bridge network to join; None: the host's network."""
    runtime: str | None = None
    pids_limit: int = 4096
    gpus: tuple[str, ...] | None = None
    """The GPUs assigned to the instance (``LaunchSpec.gpus``); None: request the
    flavor's number and let the daemon pick."""
    binds: tuple[Bind, ...] = ()
    """Host folders holding the instance's synced buckets; one at ``WORK_DIR`` takes the
    place of the EVS volume."""


@dataclass(frozen=True)
class Bind:
    source: str
    """The folder on the Docker host."""
    mount_path: str
    """Where the contract says the notebook sees it (below ``WORK_DIR``)."""
    read_only: bool


def bind_target(work_dir: str, mount_path: str) -> str:
    """``mount_path`` (below the contract's ``WORK_DIR``) inside an image whose work dir
    is ``work_dir``."""
    relative = posixpath.relpath(mount_path, WORK_DIR)
    return work_dir if relative == "." else posixpath.join(work_dir, relative)


def numeric_user(user: str) -> tuple[int, int] | None:
    """``uid:gid`` (or ``uid``) as numbers; None for names, which only the image knows."""
    name, _, group = user.partition(":")
    if not name.isdigit() or (group and not group.isdigit()):
        return None
    return int(name), int(group or name)


def check_user(user: str) -> None:
    """Refuse a recipe user that is root, by name or id, as user or as group, or none
    at all (the image's own user, root in most images)."""
    name, _, group = user.partition(":")
    for part, what in ((name, "user"), (group, "group")):
        if part == "root" or (part.isdigit() and int(part) == 0):
            raise PermanentBackendError(
                f"launch.docker.user {user!r}: notebooks never run as the root {what}"
            )
    if not name:
        raise PermanentBackendError(
            "launch.docker.user is empty: name the unprivileged uid:gid notebooks run as"
        )


def command(launch: Launch) -> list[str]:
    """The recipe's command with its placeholders filled in; with host networking,
    with Jupyter's address forced to the loopback interface."""
    values = _placeholders(launch)
    argv = [_fill(part, values) for part in launch.recipe.command]
    if launch.network is None:
        argv = [a for a in argv if not a.startswith(IP_FLAGS)]
        argv.append(f"--ServerApp.ip={LOOPBACK}")
    return argv


def environment(launch: Launch) -> dict[str, str]:
    values = _placeholders(launch)
    env = {key: _fill(value, values) for key, value in launch.recipe.env.items()}
    env[TOKEN_ENV] = launch.token  # Jupyter reads its token from here; last, so it wins
    return env


def labels(launch: Launch) -> dict[str, str]:
    return {
        MANAGED: launch.label,
        INSTANCE: launch.instance_id,
        PROJECT: launch.project_id,
        LAUNCHED_AT: str(launch.launched_at),
        PORT: str(launch.port),
    }


def volume_labels(label: str, instance_id: str, project_id: str, size_gb: int) -> dict[str, str]:
    return {MANAGED: label, INSTANCE: instance_id, PROJECT: project_id, SIZE_GB: str(size_gb)}


def container_kwargs(launch: Launch) -> dict[str, Any]:
    """The keyword arguments of ``client.containers.create`` for ``launch``."""
    check_user(launch.recipe.user)
    resources = launch.resources
    kwargs: dict[str, Any] = {
        "image": launch.image,
        "command": command(launch),
        "name": container_name(launch.instance_id),
        "user": launch.recipe.user,
        "working_dir": launch.recipe.work_dir,
        "environment": environment(launch),
        "labels": labels(launch),
        "init": True,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "pids_limit": launch.pids_limit,
        "nano_cpus": round(resources.cpus * 1e9),
        "mounts": mounts(launch),
        "log_config": LogConfig(type=LogConfig.types.JSON, config=dict(LOG_OPTIONS)),
    }
    if resources.memory_bytes:
        kwargs["mem_limit"] = resources.memory_bytes
        kwargs["memswap_limit"] = resources.memory_bytes  # equal: no swap on top
    if launch.gpus:
        # Assigned by the store, whole: exactly these, so no two containers share one.
        kwargs["device_requests"] = [
            DeviceRequest(device_ids=list(launch.gpus), capabilities=[["gpu"]])
        ]
    elif launch.gpus is None and resources.gpus > 0:
        kwargs["device_requests"] = [DeviceRequest(count=resources.gpus, capabilities=[["gpu"]])]
    if launch.network is None:
        kwargs["network_mode"] = "host"
    else:
        kwargs["network"] = launch.network
    if launch.runtime:
        kwargs["runtime"] = launch.runtime
    return kwargs


def mounts(launch: Launch) -> list[Mount]:
    """The EVS volume at the work dir, unless a synced bucket is the work dir, and each
    synced bucket at its mount path, read-only for ``ReadOnlyMany``."""
    work_dir = launch.recipe.work_dir
    binds = [
        Mount(
            target=bind_target(work_dir, b.mount_path),
            source=b.source,
            type="bind",
            read_only=b.read_only,
        )
        for b in launch.binds
    ]
    if any(m["Target"] == work_dir for m in binds):
        return binds
    volume = Mount(target=work_dir, source=volume_name(launch.instance_id), type="volume")
    return [volume, *binds]


def _placeholders(launch: Launch) -> dict[str, str]:
    return {
        "port": str(launch.port),
        "base_url": base_url(launch.instance_id),
        "cpus": cpus_text(launch.resources.cpus),
        "work_dir": launch.recipe.work_dir,
    }


def _fill(template: str, values: dict[str, str]) -> str:
    try:
        return template.format(**values)
    except (KeyError, IndexError, ValueError) as exc:
        raise PermanentBackendError(
            f"bad launch.docker template {template!r} in the catalog: {exc!r} (placeholders: "
            + ", ".join("{" + name + "}" for name in values)
            + ")"
        ) from exc
