"""How much does demanager add to JupyterLab's own start?

Prints, in one run, the median time for a bare ``jupyter lab`` (the exact
command of the default profile) to answer ``/api/status``, the median time from
``POST /instances`` to ``RUNNING`` through demanager (process backend), and
their ratio. Samples alternate between the two so drift hits both alike.

    .venv/bin/python bench/spawn.py [--samples 7]
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.server import ServerProcess, free_port, notebook_python_env, processes_of

from demanager.catalog import load_catalog

PROFILE = "Multi-Engine 1.0 (python3)-cpu"
POLL = 0.05  # both sides poll alike; a client hammering the API would steal CPU from Jupyter


def bare_start(workdir: Path) -> float:
    """Seconds from spawning the profile's command to a 200 from /api/status."""
    profile = load_catalog(None).profiles[PROFILE]
    port, token = free_port(), secrets.token_hex(16)
    base_url = "/notebooks/bare/"
    values = {
        "python": os.environ.get("DEMANAGER_PROCESS__NOTEBOOK_PYTHON")
        or notebook_python_env().get("DEMANAGER_PROCESS__NOTEBOOK_PYTHON", sys.executable),
        "port": str(port),
        "root_dir": str(workdir),
        "base_url": base_url,
        "cpus": "2",
    }
    argv = [part.format(**values) for part in profile.launch.command]
    env = {
        **os.environ,
        "JUPYTER_TOKEN": token,
        "HOME": str(workdir),
        "JUPYTER_RUNTIME_DIR": str(workdir / ".runtime"),
        **{k: v.format(**values) for k, v in profile.launch.env.items()},
    }
    url = f"http://127.0.0.1:{port}{base_url}api/status"
    began = time.perf_counter()
    proc = subprocess.Popen(
        argv,
        cwd=workdir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        with httpx.Client(headers={"Authorization": f"token {token}"}, timeout=1.0) as http:
            while True:
                try:
                    if http.get(url).status_code == 200:
                        return time.perf_counter() - began
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None:
                    raise RuntimeError("bare jupyter lab exited early")
                time.sleep(POLL)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def demanager_start(api: httpx.Client, name: str) -> float:
    """Seconds from POST create to a GET that shows RUNNING; then clean up (untimed)."""
    body = {
        "name": name,
        "profile_id": PROFILE,
        "flavor": "modelarts.vm.cpu.2u",
        "spec": {"storage": {"type": "evs"}},
    }
    began = time.perf_counter()
    response = api.post("", json=body)
    response.raise_for_status()
    instance_id = response.json()["id"]
    while api.get(f"/{instance_id}").json()["status"] != "RUNNING":
        time.sleep(POLL)
    elapsed = time.perf_counter() - began
    api.post(f"/{instance_id}/action", json={"action": "stop"})
    while api.get(f"/{instance_id}").json()["status"] != "STOPPED":
        time.sleep(0.1)
    api.delete(f"/{instance_id}")
    while processes_of(instance_id):
        time.sleep(0.1)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dm-bench-") as tmp:
        root = Path(tmp)
        root.chmod(0o711)  # as root, instance uids must reach their volumes below it
        server = ServerProcess(root / "server", backend="process").start()
        try:
            with server.client() as api:
                bare_start(root)  # warm the file-system cache for both sides
                bare, managed = [], []
                for i in range(args.samples):
                    work = root / f"bare{i}"
                    work.mkdir()
                    bare.append(bare_start(work))
                    managed.append(demanager_start(api, f"bench-{i}"))
                    print(
                        f"  sample {i + 1}: bare {bare[-1]:.3f}s  demanager {managed[-1]:.3f}s",
                        flush=True,
                    )
        finally:
            server.close()
    b, m = statistics.median(bare), statistics.median(managed)
    print(f"bare jupyter lab -> /api/status   median {b:.3f}s  (n={len(bare)})")
    print(f"demanager create -> RUNNING       median {m:.3f}s  (n={len(managed)})")
    print(f"ratio demanager / bare            {m / b:.3f}  (target <= 1.20)")


if __name__ == "__main__":
    main()
