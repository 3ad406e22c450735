"""The built-in backends' settings sections and catalog sections, as pydantic models.

Kept apart from the backends themselves so that the server's settings can name the
sections (``DEMANAGER_PROCESS__…``, ``DEMANAGER_DOCKER__…``) without importing the
Docker or Kubernetes client libraries.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from demanager.backends.base import Options, Recipe
from demanager.domain.catalog import CatalogError, parse_bytes

JUPYTERLAB_ARGS: tuple[str, ...] = (
    "--no-browser",
    "--ServerApp.port_retries=0",
    "--ServerApp.base_url={base_url}",
    "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    "--LabApp.news_url=",
    "--LabApp.extension_manager=readonly",
)
"""What every JupyterLab a backend launches is told, whatever runs it."""


class ProcessOptions(Options):
    notebook_python: Path | None = None
    """The interpreter (with JupyterLab) notebooks run with, the catalog's ``{python}``;
    default the server's own. As root it must be executable by any uid."""
    cpus: float | None = Field(default=None, gt=0)
    """CPUs the host gives notebooks; default what the server may use (its affinity,
    capped by its cgroup's ``cpu.max``)."""
    memory: int | None = Field(default=None, gt=0)
    """Memory the host gives notebooks (``64GiB``, or bytes); default the host's,
    capped by the server's cgroup's ``memory.max``."""
    cpu_overcommit: float = Field(default=1.0, gt=0)
    """Flavors may together ask for this many times ``cpus`` (CPU time is shared, never
    exhausted); memory and GPUs are never overcommitted."""
    zygote: bool = True
    """Fork each notebook server from a zygote that imported Jupyter once (a profile's
    ``launch.process.zygote: false`` opts it out); off, every start imports it anew."""

    @field_validator("memory", mode="before")
    @classmethod
    def _size(cls, value: Any) -> Any:
        try:
            return parse_bytes(value)
        except CatalogError as exc:
            raise ValueError(str(exc)) from exc


class ProcessRecipe(Recipe):
    """``launch.process`` of a profile: an argv template and extra environment.

    Placeholders: ``{python}``, ``{port}``, ``{root_dir}``, ``{base_url}``, ``{cpus}``.
    """

    command: tuple[str, ...] = (
        "{python}", "-m", "jupyterlab", "--ServerApp.ip=127.0.0.1",
        "--ServerApp.port={port}", "--ServerApp.allow_root=True",
        "--ServerApp.root_dir={root_dir}", *JUPYTERLAB_ARGS,
    )
    env: dict[str, str] = Field(default_factory=dict)
    zygote: bool = True
    """Whether this profile's servers may be forked from the notebook zygote (when its
    command is ``{python} -m jupyterlab …`` and the setting is on)."""


class FakeOptions(Options):
    start_delay_seconds: float = Field(default=0.0, ge=0)
    """How long a workload takes to become ready."""
    state_dir: Path | None = None
    """A directory whose SQLite file holds the workloads, shared by every server given the
    same directory, like a cluster that outlives any one replica; unset: in the server's
    memory."""


class FakeRecipe(Recipe):
    """The fake backend reads nothing from a profile (a profile id containing ``fail``
    makes its starts fail)."""


class ContainerRecipe(Recipe):
    """What the container backends run for a profile. Placeholders in ``command`` and
    ``env``: ``{port}``, ``{base_url}``, ``{cpus}``, ``{work_dir}``."""

    image: str | None = None
    """The image; default the profile's ``namespace/name:tag``."""
    command: tuple[str, ...] = (
        "jupyter", "lab", "--ServerApp.ip=0.0.0.0", "--ServerApp.port={port}",
        "--ServerApp.root_dir={work_dir}", *JUPYTERLAB_ARGS,
    )
    env: dict[str, str] = Field(default_factory=dict)
    port: int = Field(default=8888, ge=1, le=65535)
    """The port the notebook server listens on inside the container (or pod)."""
    user: str = "1000:100"
    """uid:gid the notebook runs as; never root."""
    work_dir: str = "/home/jovyan/work"
    """Where the instance's volume is mounted and Jupyter's root."""


class DockerOptions(Options):
    host: str | None = None
    """The Docker daemon's address (``unix:///…`` or ``tcp://…``); default ``DOCKER_HOST``
    or the local socket."""
    network: str = "demanager"
    """The user-defined bridge network instances join (created if missing); the proxy
    reaches each container at its address on it."""
    network_mode: Literal["bridge", "host"] = "bridge"
    """``host``: containers share the host's network (for hosts without bridges); each
    notebook then listens on a free loopback port of its own."""
    pull: Literal["missing", "never", "always"] = "missing"
    """When to pull the profile's image: ``never`` for hosts with no registry."""
    pull_timeout_seconds: float = Field(default=300.0, gt=0)
    """A pull that takes longer fails the start with a clear reason."""
    stop_timeout_seconds: int = Field(default=10, ge=0)
    """How long a notebook gets to shut its kernels down before it is killed."""
    runtime: str | None = None
    """The container runtime (``runc``, ``nvidia``, ``runsc``…); default the daemon's."""
    request_timeout_seconds: float = Field(default=30.0, gt=0)
    """Timeout of each call to the daemon (a pull is bounded by ``pull_timeout_seconds``
    instead, a stop by ``stop_timeout_seconds`` more)."""
    pids_limit: int = Field(default=4096, ge=64)
    """Processes and threads a notebook's container may hold at once: a fork bomb stops
    there instead of exhausting the host."""


class KubernetesOptions(Options):
    server: str | None = None
    """The API server's URL; default from the in-cluster service account, else the
    kubeconfig (``KUBECONFIG`` or ``~/.kube/config``)."""
    namespace: str = "demanager"
    """Where instances' pods, volumes and services are created."""
    storage_class: str | None = None
    """The PVCs' storage class; default the cluster's default class."""
    address: Literal["service", "pod"] = "service"
    """How the proxy reaches a notebook: its Service's cluster DNS name, or its pod's IP."""
    cluster_domain: str = "cluster.local"
    image_pull_policy: Literal["IfNotPresent", "Always", "Never"] = "IfNotPresent"
    pool_label: str = "demanager.io/pool"
    """Dedicated pools: pods of a pool get a node selector and a toleration with this
    key and the pool's id as value."""
    gpu_resource: str = "nvidia.com/gpu"
    request_timeout_seconds: float = Field(default=10.0, gt=0)
    stop_timeout_seconds: int = Field(default=10, ge=0)
    """The pods' termination grace period: how long a notebook gets to shut its kernels
    down before it is killed. A stop waits this long plus ``request_timeout_seconds``
    for the pod to go, then retries later."""
    sync_image: str | None = None
    """The image of the containers that sync an instance's buckets (``obs``, ``obsfs``);
    default the notebook's own image, which demanager's notebook image makes carry the
    agent (``images/notebook/build.sh``)."""
    sync_command: tuple[str, ...] = (
        "/opt/demanager-sync/bin/python", "-m", "demanager.objectstore.agent",
    )
    """How the sync image runs the agent; ``down`` or ``run`` and their flags follow."""
    sync_grace_seconds: int = Field(default=60, ge=0)
    """Added to ``stop_timeout_seconds`` in the grace period of pods with buckets: the
    time the last upload gets once the notebook has stopped."""
    sync_cpu: str = "250m"
    """CPU of each sync container (requests equal limits)."""
    sync_memory: str = "256Mi"
    """Memory of each sync container (requests equal limits)."""


class KubernetesRecipe(ContainerRecipe):
    """``launch.kubernetes`` of a profile: the container recipe, plus two overrides.

    ``pod`` is merged into the pod's ``spec`` and ``container`` into the notebook's
    container, after demanager has built them: mappings merge key by key, lists are
    extended (``pod: {tolerations: [...]}`` adds tolerations, ``pod: {containers:
    [...]}`` adds a sidecar), any other value replaces demanager's. For example
    ``container: {resources: {requests: {cpu: 250m}}}`` requests less than the flavor
    allows, and ``pod: {priorityClassName: notebooks}`` sets a priority class.
    """

    pod: dict[str, Any] = Field(default_factory=dict)
    """Merged into the pod's ``spec``."""
    container: dict[str, Any] = Field(default_factory=dict)
    """Merged into the notebook's container (``spec.containers[0]``)."""
