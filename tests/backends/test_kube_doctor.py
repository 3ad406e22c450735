"""``demanager doctor --backend kubernetes`` against the stand-in, as an operator runs it:
one line per missing permission, the namespace, an API server that does not answer."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.server import DEMANAGER, _die_with_parent, free_port

REPOSITORY = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def _standin(state: Path, *extra: str) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.kube.standin", "--port", str(port), "--state", str(state),
         *extra],
        cwd=REPOSITORY, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        preexec_fn=_die_with_parent,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/version", timeout=1.0).status_code == 200:
                    break
            assert proc.poll() is None and time.monotonic() < deadline, "no stand-in"
            time.sleep(0.1)
        yield url
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)


def _doctor(tmp_path: Path, url: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DEMANAGER, "doctor", "--backend", "kubernetes"],
        env={**os.environ, "DEMANAGER_DATA_DIR": str(tmp_path / "data"),
             "DEMANAGER_KUBERNETES__SERVER": url, **env},
        capture_output=True, text=True, timeout=120,
    )


@pytest.mark.slow
def test_doctor_says_what_the_cluster_lacks(tmp_path: Path) -> None:
    with _standin(tmp_path / "ok") as url:
        ready = _doctor(tmp_path, url)
        assert ready.returncode == 0, ready.stdout + ready.stderr
        assert "backend kubernetes: ready" in ready.stdout
        elsewhere = _doctor(tmp_path, url, DEMANAGER_KUBERNETES__NAMESPACE="nowhere")
        assert elsewhere.returncode == 1
        assert "the namespace 'nowhere' does not exist" in elsewhere.stdout
    with _standin(tmp_path / "denied", "--deny", "watch:pods", "--deny", "create:secrets") as url:
        denied = _doctor(tmp_path, url)
        assert denied.returncode == 1
        lines = [line for line in denied.stdout.splitlines() if "missing permission" in line]
        assert len(lines) == 2, denied.stdout
        assert "watch pods in namespace demanager" in lines[0]
        assert "create secrets in namespace demanager" in lines[1]
    gone = _doctor(tmp_path, url)
    assert gone.returncode == 1
    assert f"cannot reach the Kubernetes API server at {url}" in gone.stdout
