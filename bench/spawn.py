"""How much does demanager add to JupyterLab's own start?

Prints, in one run, the median time for a bare start of the default profile's notebook
to answer ``/api/status``, the median time from ``POST /instances`` to ``RUNNING``
through demanager, and their ratio. Samples alternate between the two so drift hits
both alike.

* ``--backend process`` (default): bare is the profile's exact ``jupyter lab`` command
  as a child process; demanager runs it with the process backend, its servers forked
  from the notebook zygote (``--zygote off``: started plainly, as bare is). Then
  ``--concurrent N`` (default 10; 0: none) creates at once, timed from the first
  ``POST`` to the last ``RUNNING``, give the starts per second.
* ``--backend docker``: bare is ``docker run -d`` of the profile's image with the same
  Jupyter command on the same network (no volume, no limits); demanager runs it with
  the docker backend. Skipped, with the reason, without a Docker daemon or the image
  (``make image``); nothing is pulled.

    .venv/bin/python bench/spawn.py [--samples 7] [--backend process|docker]
        [--zygote on|off] [--concurrent 10]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.server import ServerProcess, free_port, notebook_python_env, processes_of

from demanager.backends.base import recipe_of
from demanager.backends.options import ContainerRecipe, ProcessRecipe
from demanager.catalog import load_catalog
from demanager.domain.catalog import Profile

PROFILE = "Multi-Engine 1.0 (python3)-cpu"
FLAVOR = "modelarts.vm.cpu.2u"
POLL = 0.05  # both sides poll alike; a client hammering the API would steal CPU from Jupyter


def _profile() -> Profile:
    return load_catalog(None).profiles[PROFILE]


def _until_answers(url: str, token: str, failed: Callable[[], str | None]) -> None:
    """Poll ``url`` until it answers 200; raise with ``failed()`` if that says why not."""
    with httpx.Client(headers={"Authorization": f"token {token}"}, timeout=1.0) as http:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if http.get(url).status_code == 200:
                    return
            reason = failed()
            if reason:
                raise RuntimeError(reason)
            time.sleep(POLL)


# --- process --------------------------------------------------------------------------


def bare_process(workdir: Path) -> float:
    """Seconds from spawning the profile's command to a 200 from /api/status."""
    recipe = recipe_of(ProcessRecipe, "process", _profile())
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
    argv = [part.format(**values) for part in recipe.command]
    env = {
        **os.environ,
        "JUPYTER_TOKEN": token,
        "HOME": str(workdir),
        "JUPYTER_RUNTIME_DIR": str(workdir / ".runtime"),
        **{k: v.format(**values) for k, v in recipe.env.items()},
    }
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
        _until_answers(
            f"http://127.0.0.1:{port}{base_url}api/status",
            token,
            lambda: "bare jupyter lab exited early" if proc.poll() is not None else None,
        )
        return time.perf_counter() - began
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def demanager_start(api: httpx.Client, name: str, gone: Callable[[str], bool]) -> float:
    """Seconds from POST create to a GET that shows RUNNING; then clean up (untimed) until
    ``gone(instance_id)``."""
    body = {"name": name, "profile_id": PROFILE, "flavor": FLAVOR,
            "spec": {"storage": {"type": "evs"}}}
    began = time.perf_counter()
    response = api.post("", json=body)
    response.raise_for_status()
    instance_id = response.json()["id"]
    while (status := api.get(f"/{instance_id}").json()["status"]) != "RUNNING":
        if status.endswith("FAILED"):
            raise RuntimeError(f"{instance_id}: {api.get(f'/{instance_id}').json()}")
        time.sleep(POLL)
    elapsed = time.perf_counter() - began
    api.post(f"/{instance_id}/action", json={"action": "stop"})
    while api.get(f"/{instance_id}").json()["status"] != "STOPPED":
        time.sleep(0.1)
    api.delete(f"/{instance_id}")
    while not gone(instance_id):
        time.sleep(0.1)
    return elapsed


def concurrent_starts(api: httpx.Client, count: int) -> float:
    """Seconds from the first of ``count`` concurrent creates to the last RUNNING; then
    clean up (untimed)."""
    body = {"profile_id": PROFILE, "flavor": FLAVOR, "spec": {"storage": {"type": "evs"}}}
    ids: list[str] = []
    lock = threading.Lock()

    def create(n: int) -> None:
        with httpx.Client(base_url=str(api.base_url), headers=api.headers, timeout=30) as own:
            response = own.post("", json={**body, "name": f"many-{n}"})
            response.raise_for_status()
            with lock:
                ids.append(response.json()["id"])

    began = time.perf_counter()
    threads = [threading.Thread(target=create, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    waiting = set(ids)
    while waiting:
        for instance_id in list(waiting):
            status = api.get(f"/{instance_id}").json()["status"]
            if status.endswith("FAILED"):
                raise RuntimeError(f"{instance_id}: {status}")
            if status == "RUNNING":
                waiting.discard(instance_id)
        time.sleep(POLL)
    elapsed = time.perf_counter() - began
    for instance_id in ids:
        api.post(f"/{instance_id}/action", json={"action": "stop"})
    for instance_id in ids:
        while api.get(f"/{instance_id}").json()["status"] != "STOPPED":
            time.sleep(0.1)
        api.delete(f"/{instance_id}")
    return elapsed


def run_process(
    samples: int, zygote: bool, concurrent: int
) -> tuple[str, list[float], list[float]] | None:
    with tempfile.TemporaryDirectory(prefix="dm-bench-") as tmp:
        root = Path(tmp)
        root.chmod(0o711)  # as root, instance uids must reach their volumes below it
        env = {"DEMANAGER_PROCESS__ZYGOTE": "true" if zygote else "false",
               "DEMANAGER_INSTANCE_QUOTA": str(max(100, concurrent))}
        server = ServerProcess(root / "server", backend="process", env=env).start()
        try:
            with server.client() as api:
                bare_process(root)  # warm the file-system cache for both sides
                bare, managed = [], []
                for i in range(samples):
                    work = root / f"bare{i}"
                    work.mkdir()
                    bare.append(bare_process(work))
                    managed.append(
                        demanager_start(api, f"bench-{i}", lambda i_d: not processes_of(i_d))
                    )
                    _sample(i, bare[-1], managed[-1])
                if concurrent:
                    took = concurrent_starts(api, concurrent)
                    print(f"{f'{concurrent} concurrent creates -> RUNNING':<34}{took:.3f}s  "
                          f"{concurrent / took:.2f} starts/s  (target >= 3 on 2 cores)")
        finally:
            server.close()
    return "bare jupyter lab", bare, managed


# --- docker ---------------------------------------------------------------------------


@contextlib.contextmanager
def docker_or_reason() -> Iterator[tuple[Any, str | None]]:
    """A Docker client and None, or None and why the docker mode cannot run here."""
    try:
        import docker
    except ImportError as exc:
        yield None, f"the docker SDK is missing ({exc})"
        return
    address = os.environ.get("DOCKER_HOST") or "the default socket"
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as exc:  # any way of not reaching it: say so and skip
        yield None, f"no Docker daemon answers at {address}: {exc}"
        return
    try:
        image = recipe_of(ContainerRecipe, "docker", _profile()).image or _profile().image
        cpus = int(client.info()["NCPU"])
        if not _has_image(client, image):
            yield None, f"the image {image} is missing: run `make image`"
        elif cpus < 2:
            yield None, f"{FLAVOR} needs 2 CPUs; the Docker host has {cpus}"
        else:
            yield client, None
    finally:
        client.close()


def _has_image(client: Any, image: str) -> bool:
    import docker

    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        return False
    return True


def bare_docker(client: Any, network: str, label: str) -> float:
    """Seconds from ``docker run -d`` of the profile's image, with the Jupyter command the
    backend gives it, to a 200 from /api/status at the container's address."""
    recipe = recipe_of(ContainerRecipe, "docker", _profile())
    token = secrets.token_hex(16)
    base_url = "/notebooks/bare/"
    values = {"port": str(recipe.port), "base_url": base_url, "cpus": "2",
              "work_dir": recipe.work_dir}
    began = time.perf_counter()
    container = client.containers.run(
        recipe.image or _profile().image,
        [part.format(**values) for part in recipe.command],
        detach=True,
        user=recipe.user,
        environment={"JUPYTER_TOKEN": token},
        network=network,
        labels={"io.demanager.managed": label},
    )
    try:
        container.reload()
        address = container.attrs["NetworkSettings"]["Networks"][network]["IPAddress"]

        def failed() -> str | None:
            container.reload()
            return None if container.status == "running" else "the bare container exited"

        _until_answers(f"http://{address}:{recipe.port}{base_url}api/status", token, failed)
        return time.perf_counter() - began
    finally:
        container.remove(force=True)


def run_docker(samples: int) -> tuple[str, list[float], list[float]] | None:
    with docker_or_reason() as (client, reason):
        if client is None:
            print(f"docker: skipped: {reason}")
            return None
        label = f"bench-{uuid.uuid4().hex[:10]}"
        client.networks.create(label, driver="bridge", labels={"io.demanager.managed": label})

        def gone(instance_id: str) -> bool:
            labelled = {"label": f"io.demanager.instance={instance_id}"}
            return not client.containers.list(all=True, filters=labelled) and not (
                client.volumes.list(filters=labelled)
            )

        env = {"DEMANAGER_INSTANCE_LABEL": label, "DEMANAGER_DOCKER__NETWORK": label,
               "DEMANAGER_DOCKER__PULL": "never"}
        with tempfile.TemporaryDirectory(prefix="dm-bench-") as tmp:
            server = ServerProcess(Path(tmp) / "server", backend="docker", env=env).start()
            try:
                with server.client() as api:
                    bare_docker(client, label, label)  # warm the daemon and the page cache
                    bare, managed = [], []
                    for i in range(samples):
                        bare.append(bare_docker(client, label, label))
                        managed.append(demanager_start(api, f"bench-{i}", gone))
                        _sample(i, bare[-1], managed[-1])
            finally:
                server.close()
                _remove_labelled(client, label)
    return "bare docker run", bare, managed


def _remove_labelled(client: Any, label: str) -> None:
    labelled = {"label": f"io.demanager.managed={label}"}
    for container in client.containers.list(all=True, filters=labelled):
        container.remove(force=True)
    for volume in client.volumes.list(filters=labelled):
        volume.remove(force=True)
    for network in client.networks.list(filters=labelled):
        network.remove()


# --- report ---------------------------------------------------------------------------


def _sample(i: int, bare: float, managed: float) -> None:
    print(f"  sample {i + 1}: bare {bare:.3f}s  demanager {managed:.3f}s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=7)
    parser.add_argument("--backend", choices=["process", "docker"], default="process")
    parser.add_argument("--zygote", choices=["on", "off"], default="on")
    parser.add_argument("--concurrent", type=int, default=10)
    args = parser.parse_args()
    zygote = args.backend == "process" and args.zygote == "on"
    if args.backend == "docker":
        measured = run_docker(args.samples)
    else:
        measured = run_process(args.samples, zygote, args.concurrent)
    if measured is None:
        return
    what, bare, managed = measured
    b, m = statistics.median(bare), statistics.median(managed)
    print(f"{what + ' -> /api/status':<34}median {b:.3f}s  (n={len(bare)})")
    print(f"{'demanager create -> RUNNING':<34}median {m:.3f}s  (n={len(managed)})")
    target = "0.50, forked from the zygote" if zygote else "1.20"
    print(f"{'ratio demanager / bare':<34}{m / b:.3f}  (target <= {target})")


if __name__ == "__main__":
    main()
