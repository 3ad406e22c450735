"""The Kubernetes backend in the conformance suite, against the API-server stand-in.

No cluster runs here: ``tests/kube/standin.py`` serves the API the backend uses and
runs each pod as a Jupyter look-alike on a loopback address of its own, so the
endpoint mode is ``pod`` (there is no cluster DNS for Service names).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from demanager.backends.base import Backend, BackendContext
from demanager.backends.kubernetes.backend import KubernetesBackend
from demanager.backends.kubernetes.manifests import INSTANCE, label_value
from demanager.backends.options import KubernetesOptions
from tests.backends.conformance.harness import Harness
from tests.server import _die_with_parent, free_port

NAMESPACE = "demanager"
REPOSITORY = Path(__file__).resolve().parents[3]
KINDS = ("pods", "persistentvolumeclaims", "services", "secrets")


class KubernetesHarness(Harness):
    backend = "kubernetes"
    broken_reason = "cannot be pulled"
    no_synced_buckets = (
        "the stand-in runs no containers, so no sync container moves a bucket; the pod's "
        "sync containers and volumes are checked in test_kube_manifests.py"
    )

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.url = ""
        self.state = workdir / "standin"
        self._proc: subprocess.Popen[bytes] | None = None

    def setup(self) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.state.mkdir(parents=True, exist_ok=True)
        log = (self.workdir / "standin.log").open("ab")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tests.kube.standin", "--port", str(port),
             "--state", str(self.state), "--namespace", NAMESPACE],
            cwd=REPOSITORY, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"the stand-in exited:\n{self._log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/version", timeout=1.0).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"the stand-in did not answer:\n{self._log()}")

    def teardown(self) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            os.kill(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(self._proc.pid, signal.SIGKILL)
                self._proc.wait()
        self._proc = None

    def _log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.workdir / "standin.log").read_text(errors="replace")[-3000:]
        return ""

    def env(self) -> dict[str, str]:
        return {
            "DEMANAGER_KUBERNETES__SERVER": self.url,
            "DEMANAGER_KUBERNETES__ADDRESS": "pod",
            "DEMANAGER_KUBERNETES__NAMESPACE": NAMESPACE,
        }

    def make_backend(self) -> Backend:
        options = KubernetesOptions(server=self.url, address="pod", namespace=NAMESPACE)
        return KubernetesBackend(options, BackendContext(data_dir=self.workdir / "direct"))

    # --- looking at the cluster -----------------------------------------------------------

    def _objects(self, kind: str, instance_id: str) -> list[dict[str, Any]]:
        response = httpx.get(
            f"{self.url}/api/v1/namespaces/{NAMESPACE}/{kind}",
            params={"labelSelector": f"{INSTANCE}={label_value(instance_id)}"}, timeout=10.0,
        )
        response.raise_for_status()
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    def _pod(self, instance_id: str) -> dict[str, Any] | None:
        pods = self._objects("pods", instance_id)
        return pods[0] if pods else None

    def workload_id(self, instance_id: str) -> str | None:
        pod = self._pod(instance_id)
        if pod is None or pod["metadata"].get("deletionTimestamp"):
            return None
        if pod["status"].get("phase") != "Running":
            return None
        return f"pod {pod['metadata']['name']} uid {pod['metadata']['uid']}"

    def kill_workload(self, instance_id: str) -> None:
        pod = self._pod(instance_id)
        assert pod is not None, f"{instance_id} has no pod to kill"
        killed = httpx.post(
            f"{self.url}/standin/pods/{NAMESPACE}/{pod['metadata']['name']}/kill", timeout=10.0
        )
        killed.raise_for_status()

    def leftovers(self, instance_id: str) -> list[str]:
        left = [
            f"{kind} {obj['metadata']['name']}"
            for kind in KINDS
            for obj in self._objects(kind, instance_id)
        ]
        volumes = self.state / "volumes" / NAMESPACE
        name = instance_id.lower()
        if volumes.is_dir():
            left += [f"volume folder {p.name}" for p in volumes.iterdir() if name in p.name]
        return left
