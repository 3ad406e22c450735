"""What the conformance suite needs to know about a backend, beyond the seam itself.

The suite drives every backend the same way: a real server process over the API, and
the notebook's files through the proxy (Jupyter's contents API). Only what lies outside
the API differs: how to see the workload (to tell one from the next, or prove it gone),
how to kill it behind demanager's back, and what a backend leaves on its host. Each
backend's harness answers those; ``HARNESSES`` names them all.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from pathlib import Path

import pytest

from demanager.backends.base import Backend

CATALOG = Path(__file__).with_name("catalog.yaml")
PROFILE = "Conformance"
BROKEN = "Broken"
FLAVOR = "conformance.cpu.1u"
SMALL_FLAVOR = "conformance.cpu.small"
"""512 MiB of memory: the container backends' limits are checked with it."""

HARNESSES = {
    "process": "tests.backends.conformance.process_harness:ProcessHarness",
    "docker": "tests.backends.conformance.docker_harness:DockerHarness",
    "kubernetes": "tests.backends.conformance.kube_harness:KubernetesHarness",
}


class Harness(ABC):
    backend: str
    """The backend's entry-point name (``DEMANAGER_BACKEND``)."""
    broken_reason: str
    """A fragment of the ``failed_reasons`` message when the ``Broken`` profile starts."""
    no_synced_buckets: str | None = None
    """Why the object-storage cases cannot run on this backend here; None: they run."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir

    def setup(self) -> None:
        """Start what the backend needs (a stand-in, a network); ``pytest.skip`` with the
        reason when this machine cannot run it."""
        return

    def teardown(self) -> None:
        """Stop what ``setup`` started and remove what the tests left."""
        return

    def env(self) -> dict[str, str]:
        """Settings of the server under test (the backend's section), beyond
        ``DEMANAGER_BACKEND`` and the catalog."""
        return {}

    @abstractmethod
    def make_backend(self) -> Backend:
        """The backend itself, in this process, as a server with ``env()`` would build it
        (over ``self.workdir / "direct"`` as its data dir)."""

    @abstractmethod
    def workload_id(self, instance_id: str) -> str | None:
        """What identifies the instance's running workload (a PID, a container id, a pod
        uid), or None when none runs. A relaunch changes it; an adoption does not."""

    @abstractmethod
    def kill_workload(self, instance_id: str) -> None:
        """Make the running workload die behind demanager's back (as an OOM kill would)."""

    @abstractmethod
    def leftovers(self, instance_id: str) -> list[str]:
        """Everything of the instance still on the host or cluster, one line each."""


def load_harness(name: str, workdir: Path) -> Harness:
    module_name, _, class_name = HARNESSES[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        pytest.skip(f"no conformance harness for the {name} backend yet")
    harness: Harness = getattr(module, class_name)(workdir)
    return harness
