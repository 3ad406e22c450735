"""The Docker backend on its own: the container's configuration as a pure function (no
daemon needed), then what only a real daemon can tell (pulls, host networking, the
volume). The conformance suite covers the lifecycle through a server."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import socket
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from demanager.backends.base import BackendContext, LaunchSpec
from demanager.backends.docker import config
from demanager.backends.docker.backend import DockerBackend, DockerHandle
from demanager.backends.options import ContainerRecipe, DockerOptions
from demanager.catalog import load_catalog
from demanager.domain.catalog import Flavor, Profile, Resources
from demanager.domain.instance import Location, Storage
from demanager.domain.planning import Workload
from demanager.errors import PermanentBackendError, TransientBackendError
from tests.backends.conformance.docker_harness import remove_labelled
from tests.backends.conformance.harness import CATALOG, FLAVOR, PROFILE, SMALL_FLAVOR
from tests.docker_env import (  # noqa: F401  (the fixtures docker_client and notebook_image)
    docker_client_fixture,
    notebook_image_fixture,
)

if TYPE_CHECKING:
    import docker
    from docker.models.images import Image

CONFORMANCE = load_catalog(CATALOG)
DEFAULTS = load_catalog(None)
INSTANCE = "DE-00000000-0000-1000-8000-000000000001"


def _launch(**changes: Any) -> config.Launch:
    base = config.Launch(
        instance_id=INSTANCE,
        project_id="p" * 32,
        image="demanager/notebook:latest",
        recipe=ContainerRecipe(env={"OMP_NUM_THREADS": "{cpus}"}),
        resources=Resources(cpus=2.0, memory_bytes=8 << 30, gpus=0),
        token="t0ken",
        port=8888,
        label="deployment-a",
        launched_at=1234,
        network="notebooks",
    )
    return dataclasses.replace(base, **changes)


# --- the container's configuration, without a daemon -------------------------------------


def test_limits_come_from_the_flavor() -> None:
    small = CONFORMANCE.flavors[SMALL_FLAVOR].resources
    kwargs = config.container_kwargs(_launch(resources=small))
    assert kwargs["nano_cpus"] == 1_000_000_000
    assert kwargs["mem_limit"] == kwargs["memswap_limit"] == 512 << 20, "no swap on top"
    assert "device_requests" not in kwargs
    half = config.container_kwargs(_launch(resources=Resources(0.5, None, 0)))
    assert half["nano_cpus"] == 500_000_000
    assert "mem_limit" not in half and "memswap_limit" not in half
    assert half["environment"]["OMP_NUM_THREADS"] == "1", "{cpus} is a whole number"


def test_gpus_are_device_requests() -> None:
    gpu = DEFAULTS.flavors["modelarts.vm.gpu.p100"].resources
    (request,) = config.container_kwargs(_launch(resources=gpu))["device_requests"]
    assert request["Count"] == 1 and request["Capabilities"] == [["gpu"]]
    two = config.container_kwargs(_launch(resources=Resources(8, 1 << 30, 2)))
    assert two["device_requests"][0]["Count"] == 2


def test_assigned_gpus_are_requested_by_id_and_no_gpu_when_none_is_assigned() -> None:
    flavor = Resources(8, 1 << 30, 2)
    (request,) = config.container_kwargs(_launch(resources=flavor, gpus=("1", "GPU-9f")))[
        "device_requests"
    ]
    assert request["DeviceIDs"] == ["1", "GPU-9f"] and request["Capabilities"] == [["gpu"]]
    assert "Count" not in request or request["Count"] in (None, 0)
    # A CPU flavor on a host whose GPUs are assigned: no device at all.
    assert "device_requests" not in config.container_kwargs(_launch(gpus=()))


def test_the_notebook_runs_unprivileged_with_its_volume_as_the_only_mount() -> None:
    kwargs = config.container_kwargs(_launch())
    assert kwargs["user"] == "1000:100"
    assert kwargs["init"] is True
    assert kwargs["cap_drop"] == ["ALL"]
    assert kwargs["security_opt"] == ["no-new-privileges"]
    assert kwargs["pids_limit"] == 4096
    (mount,) = kwargs["mounts"]
    assert mount["Type"] == "volume"
    assert mount["Source"] == f"demanager-vol-{INSTANCE}"
    assert mount["Target"] == "/home/jovyan/work" == kwargs["working_dir"]
    for absent in ("volumes", "binds", "privileged", "devices", "cap_add", "tmpfs", "ports"):
        assert absent not in kwargs, absent
    assert kwargs["environment"] == {"OMP_NUM_THREADS": "2", "JUPYTER_TOKEN": "t0ken"}
    assert kwargs["log_config"]["Config"] == {"max-size": "10m", "max-file": "3"}


def test_synced_buckets_are_bound_read_only_or_read_write() -> None:
    binds = (
        config.Bind("/data/objects/i/mount-0", "/home/ma-user/work/ref", read_only=True),
        config.Bind("/data/objects/i/mount-1", "/home/ma-user/work/out", read_only=False),
    )
    volume, ro, rw = config.container_kwargs(_launch(binds=binds))["mounts"]
    assert volume["Type"] == "volume" and volume["Target"] == "/home/jovyan/work"
    assert (ro["Type"], ro["Source"], ro["Target"], ro["ReadOnly"]) == (
        "bind", "/data/objects/i/mount-0", "/home/jovyan/work/ref", True)
    assert (rw["Target"], rw["ReadOnly"]) == ("/home/jovyan/work/out", False)
    # A bucket that is the working directory takes the volume's place.
    work = config.Bind("/data/objects/i/work", "/home/ma-user/work", read_only=False)
    (only,) = config.container_kwargs(_launch(binds=(work,)))["mounts"]
    assert only["Type"] == "bind" and only["Target"] == "/home/jovyan/work"


@pytest.mark.parametrize(
    ("user", "ids"), [("1000:100", (1000, 100)), ("1000", (1000, 1000)), ("jovyan", None),
                      ("1000:users", None)],
)
def test_numeric_users_own_synced_buckets(user: str, ids: tuple[int, int] | None) -> None:
    assert config.numeric_user(user) == ids


@pytest.mark.parametrize(
    "user", ["0", "root", "0:100", "1000:0", "root:users", "1000:root", "", ":100", "000"]
)
def test_root_is_refused(user: str) -> None:
    recipe = ContainerRecipe(user=user)
    with pytest.raises(PermanentBackendError, match=r"root|empty"):
        config.container_kwargs(_launch(recipe=recipe))


@pytest.mark.parametrize("user", ["1000", "1000:100", "jovyan", "jovyan:users", "10:10"])
def test_unprivileged_users_pass(user: str) -> None:
    assert config.container_kwargs(_launch(recipe=ContainerRecipe(user=user)))["user"] == user


def test_labels_name_the_deployment_the_instance_and_what_adoption_needs() -> None:
    kwargs = config.container_kwargs(_launch())
    assert kwargs["name"] == f"demanager-{INSTANCE}"
    assert kwargs["labels"] == {
        "io.demanager.managed": "deployment-a",
        "io.demanager.instance": INSTANCE,
        "io.demanager.project": "p" * 32,
        "io.demanager.launched-at": "1234",
        "io.demanager.port": "8888",
    }
    assert "t0ken" not in str(kwargs["labels"]), "the token is not in the labels"
    assert config.volume_labels("deployment-a", INSTANCE, "p" * 32, 7) == {
        "io.demanager.managed": "deployment-a",
        "io.demanager.instance": INSTANCE,
        "io.demanager.project": "p" * 32,
        "io.demanager.size-gb": "7",
    }


def test_a_bridge_network_serves_on_the_recipe_port() -> None:
    kwargs = config.container_kwargs(_launch())
    assert kwargs["network"] == "notebooks" and "network_mode" not in kwargs
    assert "--ServerApp.ip=0.0.0.0" in kwargs["command"]
    assert "--ServerApp.port=8888" in kwargs["command"]
    assert f"--ServerApp.base_url=/notebooks/{INSTANCE}/" in kwargs["command"]
    assert "--ServerApp.root_dir=/home/jovyan/work" in kwargs["command"]


def test_host_networking_serves_on_loopback_at_the_picked_port() -> None:
    kwargs = config.container_kwargs(_launch(network=None, port=45678))
    assert kwargs["network_mode"] == "host" and "network" not in kwargs
    ips = [arg for arg in kwargs["command"] if arg.startswith(("--ServerApp.ip=", "--ip="))]
    assert ips == ["--ServerApp.ip=127.0.0.1"]
    assert "--ServerApp.port=45678" in kwargs["command"]
    custom = ContainerRecipe(command=("jupyter", "lab", "--ip=0.0.0.0", "--port={port}"))
    argv = config.container_kwargs(_launch(network=None, recipe=custom))["command"]
    assert argv == ["jupyter", "lab", "--port=8888", "--ServerApp.ip=127.0.0.1"]


def test_the_runtime_is_the_settings_one() -> None:
    assert "runtime" not in config.container_kwargs(_launch())
    assert config.container_kwargs(_launch(runtime="runsc"))["runtime"] == "runsc"


def test_a_bad_placeholder_fails_the_start() -> None:
    recipe = ContainerRecipe(command=("jupyter", "lab", "--ServerApp.root_dir={root_dir}"))
    with pytest.raises(PermanentBackendError, match="root_dir"):
        config.container_kwargs(_launch(recipe=recipe))


def test_the_sdk_turns_the_config_into_the_host_config_docker_gets() -> None:
    from docker.models.containers import _create_container_args  # the SDK's own translation

    small = CONFORMANCE.flavors[SMALL_FLAVOR].resources
    kwargs = config.container_kwargs(_launch(resources=dataclasses.replace(small, gpus=1)))
    created = _create_container_args({**kwargs, "version": "1.41"})
    host = created["host_config"]
    assert host["NanoCpus"] == 1_000_000_000
    assert host["Memory"] == host["MemorySwap"] == 512 << 20
    assert host["DeviceRequests"][0]["Capabilities"] == [["gpu"]]
    assert host["CapDrop"] == ["ALL"] and host["SecurityOpt"] == ["no-new-privileges"]
    assert host["Init"] is True and host["PidsLimit"] == 4096
    assert host["NetworkMode"] == "notebooks"
    assert [m["Source"] for m in host["Mounts"]] == [f"demanager-vol-{INSTANCE}"]
    assert "Binds" not in host and not host.get("Privileged")
    assert created["user"] == "1000:100"


def test_an_unreachable_daemon_is_transient(tmp_path: Path) -> None:
    address = f"unix://{tmp_path}/no-docker.sock"
    # The SDK leaves the socket of each failed connect unclosed (its unixconn.py); under
    # the suite's filterwarnings=error, collecting it in a later test would fail that one.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        problem = asyncio.run(_unreachable(address, tmp_path))
        gc.collect()
    assert address in problem


async def _unreachable(address: str, tmp_path: Path) -> str:
    backend = DockerBackend(DockerOptions(host=address), BackendContext(data_dir=tmp_path))
    try:
        with pytest.raises(TransientBackendError, match="does not answer"):
            await backend.start(_spec(f"DE-{uuid.uuid4()}"))
        with pytest.raises(TransientBackendError):
            await backend.observe(INSTANCE, None)
        (problem,) = await backend.check()
        return problem
    finally:
        await backend.close()


async def test_a_root_recipe_fails_before_the_daemon_is_asked(tmp_path: Path) -> None:
    address = f"unix://{tmp_path}/no-docker.sock"
    backend = DockerBackend(DockerOptions(host=address), BackendContext(data_dir=tmp_path))
    try:
        with pytest.raises(PermanentBackendError, match="root"):
            await backend.start(_spec(f"DE-{uuid.uuid4()}", docker={"user": "root"}))
    finally:
        await backend.close()


async def test_object_storage_without_s3_is_refused_before_the_daemon_is_asked(
    tmp_path: Path,
) -> None:
    address = f"unix://{tmp_path}/no-docker.sock"
    backend = DockerBackend(DockerOptions(host=address), BackendContext(data_dir=tmp_path))
    bucket = Storage("obs", Location(path="/bucket/folder/"))
    try:
        for spec in (
            dataclasses.replace(_spec(f"DE-{uuid.uuid4()}"), storage=bucket),
            dataclasses.replace(_spec(f"DE-{uuid.uuid4()}"), extend_storage=(bucket,)),
        ):
            with pytest.raises(PermanentBackendError, match="needs S3") as raised:
                await backend.start(spec)
            assert raised.value.code == "ModelArts.6324"
    finally:
        await backend.close()


# --- with a real daemon ----------------------------------------------------------------


def _spec(
    instance_id: str,
    *,
    flavor: Flavor | None = None,
    volume_size: int = 5,
    image: str | None = None,
    **launch: Any,
) -> LaunchSpec:
    profile: Profile = CONFORMANCE.profiles[PROFILE]
    section = dict(launch.get("docker") or {})
    if image is not None:
        section["image"] = image
    if section:
        profile = dataclasses.replace(profile, launch={**profile.launch, "docker": section})
    return LaunchSpec(
        instance_id=instance_id,
        project_id="p" * 32,
        profile=profile,
        flavor=flavor or CONFORMANCE.flavors[FLAVOR],
        storage=Storage("evs", Location(volume_size=volume_size)),
        extend_storage=(),
        now_ms=int(time.time() * 1000),
    )


@pytest.fixture
def label(docker_client: docker.DockerClient, notebook_image: Image) -> Iterator[str]:
    """This test's deployment label (and network name): removed with all it labels.
    Skips (or fails, in CI) without a daemon or the notebook image."""
    name = f"test-{uuid.uuid4().hex[:10]}"
    yield name
    remove_labelled(docker_client, name, name)


@pytest.fixture
async def make_backend(label: str, tmp_path: Path) -> AsyncIterator[Any]:
    built: list[DockerBackend] = []

    def make(**options: Any) -> DockerBackend:
        settings = DockerOptions(**{"network": label, "pull": "never", **options})
        backend = DockerBackend(settings, BackendContext(tmp_path, instance_label=label))
        built.append(backend)
        return backend

    yield make
    for backend in built:
        await backend.close()


async def _ready(backend: DockerBackend, instance_id: str, handle: DockerHandle) -> Any:
    deadline = time.monotonic() + 120
    while True:
        observed = await backend.observe(instance_id, handle)
        if observed.workload is Workload.READY:
            return observed
        assert time.monotonic() < deadline, f"{instance_id} never answered: {observed}"
        await asyncio.sleep(0.2)


async def test_a_pull_that_fails_is_permanent(make_backend: Any) -> None:
    backend = make_backend(pull="missing", pull_timeout_seconds=60)
    image = "127.0.0.1:9/demanager/nothing:1"  # a loopback registry that refuses at once
    with pytest.raises(PermanentBackendError, match="cannot pull the image") as raised:
        await backend.start(_spec(f"DE-{uuid.uuid4()}", image=image))
    assert image in raised.value.message and "connection refused" in raised.value.message


@contextlib.contextmanager
def _silent_registry() -> Iterator[int]:
    """A loopback port that accepts connections and never answers."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        accepted: list[socket.socket] = []
        stop = threading.Event()

        def accept() -> None:
            server.settimeout(0.2)
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    accepted.append(server.accept()[0])

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        try:
            yield server.getsockname()[1]
        finally:
            stop.set()
            thread.join()
            for conn in accepted:
                conn.close()


async def test_a_pull_past_its_timeout_is_permanent(make_backend: Any) -> None:
    backend = make_backend(pull="always", pull_timeout_seconds=1)
    with _silent_registry() as port:
        image = f"127.0.0.1:{port}/demanager/slow:1"
        with pytest.raises(PermanentBackendError, match="PULL_TIMEOUT_SECONDS"):
            await backend.start(_spec(f"DE-{uuid.uuid4()}", image=image))


async def test_a_missing_image_with_pulling_off_is_permanent(make_backend: Any) -> None:
    backend = make_backend()
    image = "demanager/no-such-image:missing"
    with pytest.raises(PermanentBackendError, match="make image"):
        await backend.start(_spec(f"DE-{uuid.uuid4()}", image=image))
    assert await backend.missing_images([image, "demanager/notebook:latest", image]) == [
        f"the image {image} is not on the Docker host and pulling is off "
        "(DEMANAGER_DOCKER__PULL=never): build it with `make image` or pull it"
    ]


async def test_check_passes_before_the_first_start_creates_the_network(
    docker_client: docker.DockerClient, make_backend: Any, label: str
) -> None:
    assert not docker_client.networks.list(names=[label])
    assert await make_backend().check() == [], "a network the first start creates is fine"
    assert await make_backend(network_mode="host").check() == []
    assert "runtime" in " ".join(await make_backend(runtime="no-such-runtime").check())


async def test_a_network_that_is_not_a_bridge_is_refused(make_backend: Any) -> None:
    backend = make_backend(network="none")  # Docker's own, of the null driver
    (problem,) = await backend.check()
    assert "not a bridge" in problem
    with pytest.raises(PermanentBackendError, match="not a bridge"):
        await backend.start(_spec(f"DE-{uuid.uuid4()}"))


async def test_a_flavor_larger_than_the_host_is_refused(
    docker_client: docker.DockerClient, make_backend: Any
) -> None:
    cpus = int(docker_client.info()["NCPU"])
    flavor = Flavor(name="huge", type="CPU", params={"CPU": cpus + 1, "memory": "1GiB"})
    with pytest.raises(PermanentBackendError, match=f"asks for {cpus + 1} CPUs.*only {cpus}"):
        await make_backend().start(_spec(f"DE-{uuid.uuid4()}", flavor=flavor))


async def test_a_container_the_daemon_cannot_start_is_a_failure(make_backend: Any) -> None:
    backend = make_backend()
    instance_id = f"DE-{uuid.uuid4()}"
    spec = _spec(instance_id, docker={"user": "nosuchuser"})
    with pytest.raises(PermanentBackendError, match=r"cannot start.*nosuchuser"):
        await backend.start(spec)
    observed = await backend.observe(instance_id, None)
    assert observed.workload is Workload.ABSENT
    assert observed.failure is not None and observed.failure.code == "ModelArts.6361"
    assert "nosuchuser" in observed.failure.message
    await backend.delete(instance_id, None, spec.storage)


async def test_a_command_that_cannot_be_run_is_a_failure(make_backend: Any) -> None:
    backend = make_backend()
    instance_id = f"DE-{uuid.uuid4()}"
    spec = _spec(instance_id, docker={"command": ["/no/such/notebook"]})
    handle = await backend.start(spec)
    deadline = time.monotonic() + 60
    while (observed := await backend.observe(instance_id, handle)).failure is None:
        assert time.monotonic() < deadline, observed
        await asyncio.sleep(0.1)
    assert observed.workload is Workload.ABSENT
    assert "exit code 127" in observed.failure.message
    assert "/no/such/notebook" in observed.failure.message
    await backend.delete(instance_id, handle, spec.storage)


async def test_host_network_mode_launches_and_answers(
    docker_client: docker.DockerClient, make_backend: Any
) -> None:
    backend = make_backend(network_mode="host")
    instance_id = f"DE-{uuid.uuid4()}"
    spec = _spec(instance_id)
    handle = await backend.start(spec)
    try:
        assert handle.host_network and handle.port != 8888
        observed = await _ready(backend, instance_id, handle)
        endpoint = observed.endpoint
        assert (endpoint.host, endpoint.port) == ("127.0.0.1", handle.port)
        contents = f"http://127.0.0.1:{handle.port}{handle.base_url}api/contents"
        async with httpx.AsyncClient() as http:
            assert (await http.get(contents)).status_code == 403, "the token is required"
        async with httpx.AsyncClient(headers=dict(endpoint.headers)) as http:
            assert (await http.get(contents)).status_code == 200
        container = docker_client.containers.get(handle.container_id)
        assert container.attrs["HostConfig"]["NetworkMode"] == "host"
        adopted = await backend.observe(instance_id, None)
        assert adopted.handle is not None and adopted.handle.host_network
        assert adopted.handle.port == handle.port and adopted.endpoint == endpoint
    finally:
        await backend.delete(instance_id, handle, spec.storage)


async def test_the_volume_keeps_its_size_and_its_usage_is_measured(
    docker_client: docker.DockerClient, make_backend: Any, label: str
) -> None:
    backend = make_backend()
    instance_id = f"DE-{uuid.uuid4()}"
    spec = _spec(instance_id, volume_size=7)
    first = await backend.start(spec)
    try:
        volume = docker_client.volumes.get(f"demanager-vol-{instance_id}")
        assert volume.attrs["Labels"]["io.demanager.size-gb"] == "7"
        assert volume.attrs["Labels"]["io.demanager.managed"] == label
        fresh = (await _ready(backend, instance_id, first)).volume_bytes
        assert fresh is not None and fresh < 1 << 20
        written = docker_client.containers.get(first.container_id).exec_run(
            ["sh", "-c", "head -c 3145728 /dev/urandom > /home/jovyan/work/blob"],
            user="1000:100",
        )
        assert written.exit_code == 0, written.output
        second = await backend.start(spec)  # a relaunch measures again, on the same volume
        assert second.container_id != first.container_id
        used = (await _ready(backend, instance_id, second)).volume_bytes
        assert used is not None and used >= 3 << 20
        adopted = await make_backend().observe(instance_id, None)
        assert adopted.workload is Workload.READY and adopted.volume_bytes is None, (
            "a server that did not launch it has not measured it"
        )
        await backend.stop(instance_id, second)
        assert docker_client.volumes.get(volume.name), "stop keeps the volume"
    finally:
        await backend.delete(instance_id, None, spec.storage)
    assert not docker_client.volumes.list(filters={"label": f"io.demanager.instance={instance_id}"})


def test_naming_the_backend_does_not_load_the_docker_sdk() -> None:
    """The settings, the engine and the package itself stay cheap to import (the CLI
    starts fast); only the backend module loads the SDK."""
    code = (
        "import sys, demanager.settings, demanager.engine.runtime, demanager.backends.docker\n"
        "assert 'docker' not in sys.modules, 'docker was imported'\n"
        "import demanager.backends.docker.backend\n"
        "assert 'docker' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_doctor_names_the_images_the_host_lacks(
    docker_client: docker.DockerClient, label: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from demanager.cli.main import app

    for key, value in {
        "DEMANAGER_DATA_DIR": str(tmp_path / "data"),
        "DEMANAGER_DOCKER__NETWORK": label,
        "DEMANAGER_DOCKER__PULL": "never",
    }.items():
        monkeypatch.setenv(key, value)
    result = CliRunner().invoke(app, ["doctor", "--backend", "docker", "--catalog", str(CATALOG)])
    assert result.exit_code == 1, result.output
    problems = [line for line in result.output.splitlines() if line.startswith("problem")]
    assert problems == [
        "problem  backend docker: the image demanager/no-such-image:missing is not on the "
        "Docker host and pulling is off (DEMANAGER_DOCKER__PULL=never): build it with "
        "`make image` or pull it"
    ]
