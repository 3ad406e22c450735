"""Per-project quotas, flavor permissions per project, and frozen projects and instances,
against a real server process; the quotas and freezes are set with the real
``demanager projects`` command on the server's own store, as an operator would."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.api.helpers import act, assert_error, ok, stored_count
from tests.conftest import client_for
from tests.server import ServerProcess, traversable_dir, wait_for_status

PROFILE = "Multi-Engine 1.0 (python3)-cpu"
PAID = "modelarts.vm.cpu.2u"
TEAM_ONLY = "modelarts.vm.cpu.team"
QUOTA2 = "modelarts.vm.cpu.quota2"
FREE = "modelarts.vm.cpu.free"
LINE = "modelarts.vm.cpu.free-line"
"""A free flavor of its own for the queue test, so no other test holds its one slot."""
TEAM = "team-" + uuid.uuid4().hex[:8]
DEFAULT_QUOTA = 6

CATALOG = f"""
profiles:
  - id: "{PROFILE}"
    flavor_type: CPU
flavors:
  - {{name: {PAID}, type: CPU, params: {{CPU: 2, memory: 8GiB}}}}
  - {{name: {TEAM_ONLY}, type: CPU, params: {{CPU: 2, memory: 8GiB}},
     permitted_projects: [{TEAM}]}}
  - {{name: {QUOTA2}, type: CPU, params: {{CPU: 2, memory: 8GiB}}, per_project_quota: 2}}
  - {{name: {FREE}, type: CPU, promo_type: Free, params: {{CPU: 1, memory: 4GiB}},
     capacity: 1}}
  - {{name: {LINE}, type: CPU, promo_type: Free, params: {{CPU: 1, memory: 4GiB}},
     capacity: 1}}
"""


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    base = traversable_dir("demanager-tenancy-")
    catalog = base / "catalog.yaml"
    catalog.write_text(CATALOG, encoding="utf-8")
    proc = ServerProcess(base / "server", env={
        "DEMANAGER_CATALOG_FILE": str(catalog),
        "DEMANAGER_INSTANCE_QUOTA": str(DEFAULT_QUOTA),
    }).start()
    yield proc
    proc.close()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def project() -> str:
    return uuid.uuid4().hex


@pytest.fixture
def api(server: ServerProcess, project: str) -> Iterator[httpx.Client]:
    with client_for(server, project=project) as client:
        yield client


def _body(name: str, flavor: str = PAID) -> dict[str, Any]:
    return {"name": name, "profile_id": PROFILE, "flavor": flavor,
            "spec": {"storage": {"type": "evs"}}}


def _cli(server: ServerProcess, *args: str) -> str:
    """Run ``demanager projects …`` on the server's store; its one line of output."""
    done = server.cli("projects", *args)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _running(api: httpx.Client, name: str, flavor: str = PAID) -> dict[str, Any]:
    created = ok(api.post("", json=_body(name, flavor)))
    return wait_for_status(api, created["id"], "RUNNING")


def _stopped(api: httpx.Client, name: str, flavor: str = PAID) -> dict[str, Any]:
    instance = _running(api, name, flavor)
    ok(act(api, instance["id"], "stop"))
    return wait_for_status(api, instance["id"], "STOPPED")


def _refused_unchanged(api: httpx.Client, instance_id: str, action: str) -> None:
    """``action`` answers 6326 and changes nothing: status and update time as they were."""
    before = ok(api.get(f"/{instance_id}"))
    assert_error(act(api, instance_id, action), "ModelArts.6326")
    after = ok(api.get(f"/{instance_id}"))
    assert after["status"] == before["status"]
    assert after["latest_update_timestamp"] == before["latest_update_timestamp"]


# --- quotas ---------------------------------------------------------------------------


def test_a_quota_set_with_the_cli_answers_6302_and_stores_nothing(
    server: ServerProcess, api: httpx.Client, project: str
) -> None:
    assert _cli(server, "quota", project, "2") == f"project {project}: instance quota 2"
    ok(api.post("", json=_body("one")))
    ok(api.post("", json=_body("two")))
    body = assert_error(api.post("", json=_body("three")), "ModelArts.6302")
    assert "(2)" in body["error_message"]
    assert stored_count(api) == 2
    listed = _cli(server, "list").splitlines()
    assert f"{project}\tquota 2\t2 live\t0 frozen\tactive" in listed

    # Back to the server's default (DEMANAGER_INSTANCE_QUOTA).
    assert _cli(server, "quota", project, "--default") == (
        f"project {project}: instance quota {DEFAULT_QUOTA} (the default)")
    ok(api.post("", json=_body("three")))
    assert stored_count(api) == 3


def test_6302_comes_before_0118_and_each_project_has_its_own_flavor_quota(
    server: ServerProcess, api: httpx.Client, project: str
) -> None:
    _cli(server, "quota", project, "2")
    ok(api.post("", json=_body("a", QUOTA2)))
    ok(api.post("", json=_body("b", QUOTA2)))
    assert_error(api.post("", json=_body("c", QUOTA2)), "ModelArts.6302")  # both full
    _cli(server, "quota", project, "10")
    body = assert_error(api.post("", json=_body("c", QUOTA2)), "ModelArts.0118")
    assert QUOTA2 in body["error_message"]
    assert stored_count(api) == 2
    ok(api.post("", json=_body("c", PAID)))  # other flavors are not affected
    with client_for(server, project=uuid.uuid4().hex) as other:
        ok(other.post("", json=_body("a", QUOTA2)))  # nor other projects


# --- flavor permissions per project ---------------------------------------------------


def _flavors(server: ServerProcess, project: str) -> dict[str, dict[str, Any]]:
    with client_for(server, project=project) as client:
        listed = ok(client.get(f"{server.url}/v1/{project}/demanager/flavors"))
    return {f["name"]: f for f in listed["flavors"]}


def test_a_flavor_limited_to_projects_answers_6328_elsewhere(
    server: ServerProcess, api: httpx.Client, project: str
) -> None:
    body = assert_error(api.post("", json=_body("nb", TEAM_ONLY)), "ModelArts.6328")
    assert TEAM_ONLY in body["error_message"]
    assert stored_count(api) == 0
    assert _flavors(server, project)[TEAM_ONLY]["is_permitted"] is False
    assert _flavors(server, project)[PAID]["is_permitted"] is True

    assert _flavors(server, TEAM)[TEAM_ONLY]["is_permitted"] is True
    with client_for(server, project=TEAM) as team:
        created = ok(team.post("", json=_body("nb-" + uuid.uuid4().hex[:6], TEAM_ONLY)))
        assert created["flavor_details"]["is_permitted"] is True
        listed = ok(team.get("", params={"de_type": "Notebook"}))
        mine = next(i for i in listed["instances"] if i["id"] == created["id"])
        assert mine["flavor_details"]["is_permitted"] is True


# --- frozen ---------------------------------------------------------------------------


def test_a_frozen_project_answers_6326_until_unfrozen(
    server: ServerProcess, api: httpx.Client, project: str
) -> None:
    running = _running(api, "running")
    stopped = _stopped(api, "stopped")
    free = _stopped(api, "free", FREE)
    assert _cli(server, "freeze", project) == f"froze project {project} and 3 instances"

    assert_error(api.post("", json=_body("new")), "ModelArts.6326")
    assert stored_count(api) == 3
    _refused_unchanged(api, stopped["id"], "start")
    _refused_unchanged(api, running["id"], "restart")
    _refused_unchanged(api, free["id"], "queue")
    # A freeze stops nothing by itself, and stopping stays allowed.
    assert ok(api.get(f"/{running['id']}"))["status"] == "RUNNING"
    ok(act(api, running["id"], "stop"))
    wait_for_status(api, running["id"], "STOPPED")
    _refused_unchanged(api, running["id"], "start")
    assert f"{project}\tquota {DEFAULT_QUOTA} (default)\t3 live\t3 frozen\tfrozen" in _cli(
        server, "list").splitlines()

    assert _cli(server, "unfreeze", project) == f"unfroze project {project} and 3 instances"
    assert ok(act(api, stopped["id"], "start"))["current_status"] == "STARTING"
    assert ok(act(api, free["id"], "queue"))["current_status"] == "START_QUEUING"
    ok(api.post("", json=_body("new")))
    wait_for_status(api, stopped["id"], "RUNNING")
    wait_for_status(api, free["id"], "RUNNING")
    ok(act(api, free["id"], "stop"))  # the free flavor's one slot, for the next test
    wait_for_status(api, free["id"], "STOPPED")


def test_a_frozen_instance_answers_6326_and_its_neighbours_do_not(
    server: ServerProcess, api: httpx.Client, project: str
) -> None:
    frozen = _stopped(api, "frozen")
    neighbour = _stopped(api, "neighbour")
    assert _cli(server, "freeze-instance", frozen["id"]) == f"froze {frozen['id']}"
    _refused_unchanged(api, frozen["id"], "start")
    assert ok(act(api, neighbour["id"], "start"))["current_status"] == "STARTING"
    ok(api.post("", json=_body("new")))  # the project is not frozen

    assert _cli(server, "unfreeze-instance", frozen["id"]) == f"unfroze {frozen['id']}"
    assert ok(act(api, frozen["id"], "start"))["current_status"] == "STARTING"
    running = wait_for_status(api, frozen["id"], "RUNNING")

    # Frozen while it runs: it runs on, and a restart is refused.
    _cli(server, "freeze-instance", running["id"])
    _refused_unchanged(api, running["id"], "restart")
    assert ok(api.get(f"/{running['id']}"))["status"] == "RUNNING"


def test_freeze_with_stop_stops_what_runs_and_it_stays_frozen(
    server: ServerProcess, api: httpx.Client, project: str
) -> None:
    running = _running(api, "running")
    line = _cli(server, "freeze", project, "--stop")
    assert line == f"froze project {project} and 1 instance; asked 1 running instance to stop"
    wait_for_status(api, running["id"], "STOPPED")
    _refused_unchanged(api, running["id"], "start")
    _cli(server, "unfreeze", project)


def test_a_frozen_queued_instance_waits_and_the_next_in_line_is_admitted(
    server: ServerProcess, api: httpx.Client, project: str
) -> None:
    with client_for(server, project=uuid.uuid4().hex) as other:
        holder = _running(other, "holder", LINE)
        frozen = ok(api.post("", json=_body("frozen", LINE)))
        behind = ok(other.post("", json=_body("behind", LINE)))
        assert frozen["status"] == behind["status"] == "CREATE_QUEUING"
        _cli(server, "freeze", project)

        ok(act(other, holder["id"], "stop"))
        wait_for_status(other, behind["id"], "RUNNING")
        assert ok(api.get(f"/{frozen['id']}"))["status"] == "CREATE_QUEUING"

        _cli(server, "unfreeze", project)
        ok(act(other, behind["id"], "stop"))
        wait_for_status(api, frozen["id"], "RUNNING")
        ok(act(api, frozen["id"], "stop"))
        wait_for_status(api, frozen["id"], "STOPPED")


def test_an_instance_of_a_frozen_project_cannot_be_unfrozen_alone(
    server: ServerProcess, api: httpx.Client, project: str
) -> None:
    instance = ok(api.post("", json=_body("nb")))
    _cli(server, "freeze", project)
    covered = server.cli("projects", "unfreeze-instance", instance["id"])
    assert covered.returncode == 1
    assert covered.stderr.strip() == (
        f"error: project {project!r} is frozen; unfreeze the project instead "
        "(`demanager projects unfreeze`)")
    _refused_unchanged(api, instance["id"], "restart")
