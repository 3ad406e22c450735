"""The Python SDK against a real ``demanager serve`` process (fake backend)."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from demanager.client import (
    AsyncClient,
    AuthenticationError,
    Client,
    InstanceFailed,
    InstanceNotFound,
    InvalidRequest,
    NameTaken,
    PermissionDenied,
    RouteNotFound,
    StateConflict,
    TransportError,
    WaitTimeout,
)
from tests.server import ServerProcess, free_port

PROFILE = "Multi-Engine 1.0 (python3)-cpu"
FLAVOR = "modelarts.vm.cpu.2u"


@pytest.fixture
def dm(server: ServerProcess, project: str) -> Iterator[Client]:
    with Client(server.url, project=project, token=server.token) as client:
        yield client


def test_unknown_instance_is_instance_not_found(dm: Client) -> None:
    with pytest.raises(InstanceNotFound) as caught:
        dm.get("DE-00000000-0000-1000-8000-000000000000")
    assert caught.value.code == "ModelArts.6309"
    assert caught.value.http_status == 400


def test_bad_token_is_an_authentication_error(server: ServerProcess, project: str) -> None:
    with (
        Client(server.url, project=project, token="not-a-token") as dm,
        pytest.raises(AuthenticationError) as caught,
    ):
        dm.list()
    assert caught.value.http_status == 401
    assert caught.value.code == "ModelArts.6620"


def test_other_project_is_permission_denied(server: ServerProcess, project: str) -> None:
    token = server.make_token(project, "alice")
    with (
        Client(server.url, project="0" * 32, token=token) as dm,
        pytest.raises(PermissionDenied) as caught,
    ):
        dm.list()
    assert caught.value.code == "ModelArts.0210"


def test_validation_and_conflicts(dm: Client) -> None:
    with pytest.raises(InvalidRequest) as bad_name:
        dm.create("no spaces", profile_id=PROFILE, flavor=FLAVOR)
    assert bad_name.value.code == "ModelArts.6334"
    with pytest.raises(InvalidRequest) as bad_flavor:
        dm.create("nb", profile_id=PROFILE, flavor="no.such.flavor")
    assert bad_flavor.value.code == "ModelArts.6323"

    first = dm.create("nb", profile_id=PROFILE, flavor=FLAVOR)
    with pytest.raises(NameTaken):
        dm.create("nb", profile_id=PROFILE, flavor=FLAVOR)
    dm.wait_until(first.id, "RUNNING", timeout=30, interval=0.05)
    with pytest.raises(StateConflict) as running:
        dm.delete(first.id)
    assert running.value.code == "ModelArts.6304"


def test_unknown_route_and_unreachable_server(server: ServerProcess, project: str) -> None:
    with (
        Client(f"{server.url}/elsewhere", project=project, token=server.token) as dm,
        pytest.raises(RouteNotFound),
    ):
        dm.list()
    with (
        Client(f"http://127.0.0.1:{free_port()}", project=project, token="t") as nowhere,
        pytest.raises(TransportError),
    ):
        nowhere.list()


def test_create_wait_stop_delete(dm: Client) -> None:
    created = dm.create(
        "lifecycle", profile_id=PROFILE, flavor=FLAVOR, auto_stop=3600, annotations={"k": "v"}
    )
    assert created.status == "CREATING"
    seen: list[str] = []
    running = dm.wait_until(
        created.id,
        "RUNNING",
        timeout=60,
        interval=0.05,
        on_progress=lambda i: seen.append(i.status),
    )
    assert seen[-1] == "RUNNING"
    assert running.spec.annotations["url"]
    assert running.spec.annotations["k"] == "v"
    assert running.spec.auto_stop.enable is True
    assert running.spec.auto_stop.remain_time is not None

    updated = dm.update(created.id, description="renamed")
    assert updated.description == "renamed"

    answer = dm.stop(created.id)
    assert (answer.previous_state, answer.current_status) == ("RUNNING", "STOPPING")
    assert dm.wait_until(created.id, "STOPPED", timeout=60, interval=0.05).status == "STOPPED"

    assert dm.delete(created.id).instance_id == created.id
    dm.wait_until_deleted(created.id, timeout=30, interval=0.05)
    with pytest.raises(InstanceNotFound):
        dm.get(created.id)


def test_wait_ends_on_a_failed_start_and_on_timeout(dm: Client) -> None:
    failing = dm.create("fails", profile_id="Failing profile", flavor=FLAVOR)
    with pytest.raises(InstanceFailed) as caught:
        dm.wait_until(failing.id, "RUNNING", timeout=60, interval=0.05)
    assert caught.value.status == "CREATE_FAILED"
    assert caught.value.error_code is not None

    # A failed status ends any wait that does not target it, at once.
    with pytest.raises(InstanceFailed):
        dm.wait_until(failing.id, "STOPPED", timeout=60, interval=0.05)

    steady = dm.create("steady", profile_id=PROFILE, flavor=FLAVOR)
    dm.wait_until(steady.id, "RUNNING", timeout=60, interval=0.05)
    with pytest.raises(WaitTimeout) as late:
        dm.wait_until(steady.id, "STOPPED", timeout=0.3, interval=0.05)
    assert late.value.last_status == "RUNNING"


def test_catalog(dm: Client) -> None:
    assert PROFILE in {p.id for p in dm.profiles()}
    flavors = {f.name: f for f in dm.flavors()}
    assert flavors[FLAVOR].type == "CPU"


@pytest.mark.slow
def test_iter_instances_pages_over_250(dm: Client) -> None:
    names = [f"nb-{n:03d}" for n in range(250)]
    shuffled = random.Random(3).sample(names, len(names))
    for name in shuffled:
        dm.create(name, profile_id=PROFILE, flavor=FLAVOR)

    listed = [instance.name for instance in dm.iter_instances(page_size=100)]
    assert listed == names
    backwards = [i.name for i in dm.iter_instances(order="desc", page_size=64)]
    assert backwards == names[::-1]
    by_age = [i.name for i in dm.iter_instances(sortby="creation_timestamp", page_size=100)]
    assert by_age == shuffled
    assert dm.list(limit=10, offset=245).total_count == 250
    assert len(dm.list(limit=10, offset=245).instances) == 5


async def test_async_client_round_trip(server: ServerProcess, project: str) -> None:
    async with AsyncClient(server.url, project=project, token=server.token) as dm:
        created = await dm.create("async-nb", profile_id=PROFILE, flavor=FLAVOR)
        running = await dm.wait_until(created.id, "RUNNING", timeout=60, interval=0.05)
        assert running.status == "RUNNING"
        assert [i.id async for i in dm.iter_instances(page_size=1)] == [created.id]
        found = await dm.find("async-nb")
        assert found is not None and found.id == created.id
        await dm.stop(created.id)
        await dm.wait_until(created.id, "STOPPED", timeout=60, interval=0.05)
        await dm.delete(created.id)
        with pytest.raises(InstanceNotFound):
            await dm.get(created.id)
