"""The notebook image that ``make image`` builds, as the container backends rely on it:
JupyterLab 4 for an unprivileged user, a work directory that a fresh named volume
inherits the ownership of, a default command that serves, and every default-catalog
profile naming this same image."""

from __future__ import annotations

import contextlib
import random
import re
import time
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from demanager.catalog import load_catalog
from tests.docker_env import (  # noqa: F401  (the fixtures docker_client and notebook_image)
    MANAGED_LABEL,
    docker_client_fixture,
    image_present,
    notebook_image_fixture,
)

if TYPE_CHECKING:
    import docker
    from docker.models.containers import Container
    from docker.models.images import Image

pytestmark = pytest.mark.slow

WORK = "/home/jovyan/work"
RUN_ID = uuid.uuid4().hex
LABELS = {MANAGED_LABEL: "test", "io.demanager.test-run": RUN_ID}


@pytest.fixture(scope="module", autouse=True)
def _sweep(docker_client: docker.DockerClient) -> Iterator[None]:
    """Whatever a failed test left behind goes too (only this run's, by its label)."""
    yield
    run = f"io.demanager.test-run={RUN_ID}"
    for container in docker_client.containers.list(all=True, filters={"label": run}):
        container.remove(force=True)
    for volume in docker_client.volumes.list(filters={"label": run}):
        volume.remove(force=True)


@contextlib.contextmanager
def started(client: docker.DockerClient, image: Image, **kwargs: Any) -> Iterator[Container]:
    container = client.containers.run(image, detach=True, labels=LABELS, **kwargs)
    try:
        yield container
    finally:
        container.remove(force=True)


def run_output(client: docker.DockerClient, image: Image, script: str, **kwargs: Any) -> str:
    """Run ``sh -c script`` in a fresh container; its output, or a failure with it."""
    with started(client, image, command=["sh", "-c", script], **kwargs) as container:
        status = container.wait(timeout=120)
        output: str = container.logs().decode()
    assert status["StatusCode"] == 0, output
    return output


def test_runs_as_jovyan_in_the_work_directory(
    docker_client: docker.DockerClient, notebook_image: Image
) -> None:
    out = run_output(docker_client, notebook_image, 'id -u; id -g; pwd; echo "$HOME"')
    assert out.split() == ["1000", "100", WORK, "/home/jovyan"]


def test_work_directory_belongs_to_the_user(
    docker_client: docker.DockerClient, notebook_image: Image
) -> None:
    out = run_output(docker_client, notebook_image, f"stat -c '%u %g %a' {WORK}")
    assert out.split() == ["1000", "100", "755"]


def test_jupyterlab_is_installed(docker_client: docker.DockerClient, notebook_image: Image) -> None:
    out = run_output(
        docker_client,
        notebook_image,
        "python3 -c 'import jupyterlab, ipykernel' && jupyter lab --version",
    )
    assert re.fullmatch(r"4\.\d+\.\d+\S*", out.strip()), out


def test_named_volume_is_writable_by_the_user(
    docker_client: docker.DockerClient, notebook_image: Image
) -> None:
    volume = docker_client.volumes.create(f"dm-test-{RUN_ID[:12]}", labels=LABELS)
    try:
        out = run_output(
            docker_client,
            notebook_image,
            f"stat -c '%u %g' {WORK} && echo hello > {WORK}/note.txt && cat {WORK}/note.txt",
            volumes={volume.name: {"bind": WORK, "mode": "rw"}},
        )
        assert out.split() == ["1000", "100", "hello"]
        # A second container on the same volume finds the file: it is storage, not scratch.
        again = run_output(
            docker_client,
            notebook_image,
            f"stat -c '%u' {WORK}/note.txt && cat {WORK}/note.txt",
            volumes={volume.name: {"bind": WORK, "mode": "rw"}},
        )
        assert again.split() == ["1000", "hello"]
    finally:
        volume.remove(force=True)


def test_default_command_serves_jupyterlab(
    docker_client: docker.DockerClient, notebook_image: Image
) -> None:
    probe = [
        "python3",
        "-c",
        "import urllib.request; print(urllib.request.urlopen("
        "'http://127.0.0.1:8888/api', timeout=2).read().decode())",
    ]
    with started(docker_client, notebook_image) as container:
        deadline = time.monotonic() + 60
        delay = 0.1
        while True:
            code, out = container.exec_run(probe)
            if code == 0:
                break
            container.reload()
            assert container.status == "running", container.logs().decode()
            assert time.monotonic() < deadline, container.logs().decode()
            time.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, 1.0)
    assert isinstance(out, bytes)
    assert '"version"' in out.decode()


def catalog_image_refs() -> list[str]:
    """What ``make image`` tags: each default profile's image, and any image a container
    backend's launch section names instead."""
    refs = set()
    for profile in load_catalog(None).profiles.values():
        refs.add(profile.image)
        for backend in ("docker", "kubernetes"):
            if image := profile.launch.get(backend, {}).get("image"):
                refs.add(str(image))
    return sorted(refs)


def test_every_default_profile_names_this_image(
    docker_client: docker.DockerClient, notebook_image: Image
) -> None:
    refs = catalog_image_refs()
    assert refs
    ids = {
        ref: docker_client.images.get(ref).id if image_present(docker_client, ref) else None
        for ref in refs
    }
    assert ids == dict.fromkeys(refs, notebook_image.id)
