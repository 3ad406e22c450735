"""Actions, delete and PUT per status: contract §4.3 and §5, on the statuses that hold.

The statuses the fake backend passes through in a blink (STARTING, STOPPING,
RESTARTING, ...) are covered by ``test_action_held.py`` where they can be held.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.api.helpers import (
    CPU_FLAVOR,
    FAILING_PROFILE,
    FREE_FLAVOR,
    FULL_FREE_FLAVOR,
    act,
    assert_error,
    build,
    create,
    listing,
    ok,
    remove,
)
from tests.contract_table import ACTIONS, OPERATIONS, expected
from tests.server import wait_for_status

REACHABLE = ("RUNNING", "STOPPED", "CREATE_FAILED", "CREATE_QUEUING", "START_QUEUING", "DELETED")

#: Where each accepted action's status goes on by itself (fake backend, no delay).
SETTLES_TO = {"STARTING": {"STARTING", "RUNNING"}, "STOPPING": {"STOPPING", "STOPPED"},
              "RESTARTING": {"RESTARTING", "RUNNING"},
              # a free flavor with room admits a queued instance at once
              "START_QUEUING": {"START_QUEUING", "READY_TO_START", "STARTING", "RUNNING"},
              "STOPPED": {"STOPPED"}}


def reach(api: httpx.Client, status: str, flavor: str = FREE_FLAVOR,
          name: str = "nb") -> dict[str, Any]:
    """A new instance in ``status`` (one the fake backend holds)."""
    if status == "CREATE_FAILED":
        created = create(api, name=name, flavor=flavor, profile_id=FAILING_PROFILE)
        return wait_for_status(api, created["id"], "CREATE_FAILED", timeout=30)
    if status in ("CREATE_QUEUING", "START_QUEUING"):
        return reach_queued(api, status, name)
    created = create(api, name=name, flavor=flavor)
    view = wait_for_status(api, created["id"], "RUNNING", timeout=30)
    if status == "RUNNING":
        return view
    ok(act(api, view["id"], "stop"))
    view = wait_for_status(api, view["id"], "STOPPED", timeout=30)
    if status == "STOPPED":
        return view
    assert status == "DELETED"
    ok(api.delete(f"/{view['id']}"))
    return {**view, "status": "DELETED"}


def reach_queued(api: httpx.Client, status: str, name: str = "nb") -> dict[str, Any]:
    """On a free flavor with no slot at all: create queues; dequeue, then queue again."""
    created = create(api, name=name, flavor=FULL_FREE_FLAVOR)
    assert created["status"] == "CREATE_QUEUING"
    if status == "CREATE_QUEUING":
        return ok(api.get(f"/{created['id']}"))
    ok(act(api, created["id"], "dequeue"))
    wait_for_status(api, created["id"], "STOPPED", timeout=30)
    ok(act(api, created["id"], "queue"))
    return wait_for_status(api, created["id"], "START_QUEUING", timeout=30)


def perform(api: httpx.Client, instance_id: str, operation: str) -> httpx.Response:
    if operation == "delete":
        return api.delete(f"/{instance_id}")
    if operation == "PUT":
        return api.put(f"/{instance_id}", json={"description": "changed"})
    return act(api, instance_id, operation)


def check_cell(api: httpx.Client, before: dict[str, Any], operation: str, cell: str) -> None:
    """Send ``operation`` to an instance seen as ``before`` and check the §4.3 cell."""
    status, instance_id = before["status"], before["id"]
    time.sleep(0.002)  # so that a bump of latest_update_timestamp shows
    response = perform(api, instance_id, operation)
    if cell.isdigit():
        assert_error(response, f"ModelArts.{cell}")
        if status != "DELETED":
            after = ok(api.get(f"/{instance_id}"))
            assert after["status"] == status  # a rejected request changes nothing
            assert after["latest_update_timestamp"] == before["latest_update_timestamp"]
            assert after["description"] == before["description"]
        return
    if cell == "allowed" and operation == "delete":
        assert ok(response) == {"instance_id": instance_id}
        assert_error(api.get(f"/{instance_id}"), "ModelArts.6309")
        tombs = listing(api, status="DELETED", show_self="false")["instances"]
        assert instance_id in [t["id"] for t in tombs]
        assert instance_id not in [i["id"] for i in listing(api, show_self="false")["instances"]]
        return
    if cell == "allowed":
        body = ok(response)
        assert body["status"] == status and body["description"] == "changed"
        return
    body = ok(response)
    assert body == {"current_status": cell, "previous_state": status}
    after = ok(api.get(f"/{instance_id}"))
    assert after["status"] in SETTLES_TO[cell]
    assert int(after["latest_update_timestamp"]) > int(before["latest_update_timestamp"])


@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize("status", REACHABLE)
def test_state_table(api: httpx.Client, status: str, operation: str) -> None:
    check_cell(api, reach(api, status), operation, expected(status, operation))


@pytest.mark.parametrize("operation", ["queue", "dequeue"])
@pytest.mark.parametrize("status", ["RUNNING", "STOPPED", "CREATE_FAILED"])
def test_queue_and_dequeue_need_a_free_flavor(api: httpx.Client, status: str,
                                              operation: str) -> None:
    before = reach(api, status, flavor=CPU_FLAVOR)
    check_cell(api, before, operation, expected(status, operation, free_flavor=False))
    assert expected(status, operation, free_flavor=False) == "6357"


def test_queue_then_dequeue_round_trip(api: httpx.Client) -> None:
    created = create(api, flavor=FULL_FREE_FLAVOR)
    ok(act(api, created["id"], "dequeue"))
    stopped = wait_for_status(api, created["id"], "STOPPED", timeout=30)
    assert ok(act(api, stopped["id"], "queue")) == {
        "current_status": "START_QUEUING", "previous_state": "STOPPED"}
    queued = ok(api.get(f"/{stopped['id']}"))
    assert queued["status"] == "START_QUEUING"
    assert ok(act(api, stopped["id"], "dequeue")) == {
        "current_status": "STOPPED", "previous_state": "START_QUEUING"}
    back = ok(api.get(f"/{stopped['id']}"))
    assert back["status"] == "STOPPED"
    assert "queuing_info" not in back


def test_queued_instance_shows_queuing_info(api: httpx.Client) -> None:
    queued = reach(api, "START_QUEUING")
    info = queued["queuing_info"]
    assert info["id"] == queued["id"] and info["name"] == queued["name"]
    assert info["status"] == "START_QUEUING"
    assert info["de_type"] == "Notebook"
    assert info["flavor"] == FULL_FREE_FLAVOR
    assert type(info["begin_timestamp"]) is int
    assert int(queued["creation_timestamp"]) <= info["begin_timestamp"]
    # the queue is the flavor's, across projects: other tests may have queued before
    assert type(info["rank"]) is int and info["rank"] >= 1
    second = reach(api, "START_QUEUING", name="second")
    assert second["queuing_info"]["rank"] == info["rank"] + 1
    assert ok(api.get(f"/{queued['id']}"))["queuing_info"]["rank"] == info["rank"]


def test_start_stop_restart_cycle(api: httpx.Client) -> None:
    running = reach(api, "RUNNING")
    first_stop = running["spec"]["auto_stop"]["stop_timestamp"]
    time.sleep(0.002)
    assert ok(act(api, running["id"], "restart")) == {
        "current_status": "RESTARTING", "previous_state": "RUNNING"}
    restarted = wait_for_status(api, running["id"], "RUNNING", timeout=30)
    assert restarted["spec"]["auto_stop"]["stop_timestamp"] > first_stop  # re-armed
    assert ok(act(api, running["id"], "stop")) == {
        "current_status": "STOPPING", "previous_state": "RUNNING"}
    stopped = wait_for_status(api, running["id"], "STOPPED", timeout=30)
    assert "stop_timestamp" not in stopped["spec"]["auto_stop"]
    assert ok(act(api, running["id"], "start")) == {
        "current_status": "STARTING", "previous_state": "STOPPED"}
    again = wait_for_status(api, running["id"], "RUNNING", timeout=30)
    assert again["spec"]["annotations"]["url"]


def test_create_failed_instance_can_be_deleted_and_its_name_reused(api: httpx.Client) -> None:
    failed = reach(api, "CREATE_FAILED", flavor=CPU_FLAVOR)
    ok(api.delete(f"/{failed['id']}"))
    create(api, name=failed["name"])


# --- check order of the action endpoint: 6309 -> 6400 -> 6335 -> 6332 -> 6336 -> state ----

ACTION_BODIES = [
    pytest.param(b"{", "6400", id="not-json"),
    pytest.param(b"", "6400", id="empty"),
    pytest.param(b"[]", "6400", id="array"),
    pytest.param(b'"start"', "6400", id="string"),
    pytest.param(b"null", "6400", id="null"),
    pytest.param(b"\xff", "6400", id="not-utf8"),
    pytest.param(b"{}", "6335", id="no-action"),
    pytest.param(b'{"action": null}', "6335", id="null-action"),
    pytest.param(b'{"Action": "start"}', "6335", id="wrong-key-case"),
    pytest.param(b'{"action": 1}', "6332", id="int-action"),
    pytest.param(b'{"action": true}', "6332", id="bool-action"),
    pytest.param(b'{"action": ["stop"]}', "6332", id="array-action"),
    pytest.param(b'{"action": {"name": "stop"}}', "6332", id="object-action"),
    pytest.param(b'{"action": "STOP"}', "6336", id="upper-case"),
    pytest.param(b'{"action": "Stop"}', "6336", id="capitalised"),
    pytest.param(b'{"action": " stop"}', "6336", id="space"),
    pytest.param(b'{"action": ""}', "6336", id="empty-action"),
    pytest.param(b'{"action": "reboot"}', "6336", id="unknown"),
    pytest.param(b'{"action": "delete"}', "6336", id="delete-is-not-an-action"),
    pytest.param(b'{"action": "start"}', "6305", id="state-table-last"),
    pytest.param(b'{"action": "start", "extra": 1}', "6305", id="extra-keys-ignored"),
]


@pytest.fixture
def running(api: httpx.Client) -> dict[str, Any]:
    return reach(api, "RUNNING", flavor=CPU_FLAVOR)


@pytest.mark.parametrize(("raw", "code"), ACTION_BODIES)
def test_action_check_order(api: httpx.Client, running: dict[str, Any], raw: bytes,
                            code: str) -> None:
    assert_error(api.post("/DE-unknown/action", content=raw), "ModelArts.6309")
    assert_error(api.post(f"/{running['id']}/action", content=raw), f"ModelArts.{code}")
    after = ok(api.get(f"/{running['id']}"))
    assert after["latest_update_timestamp"] == running["latest_update_timestamp"]


def test_concurrent_actions_exactly_one_wins(api: httpx.Client, running: dict[str, Any]) -> None:
    with ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(lambda _: act(api, running["id"], "stop"), range(6)))
    winners = [r for r in responses if r.status_code == 200]
    assert len(winners) == 1, [r.text for r in responses]
    assert winners[0].json() == {"current_status": "STOPPING", "previous_state": "RUNNING"}
    for loser in responses:
        if loser.status_code != 200:
            assert assert_error(loser, loser.json()["error_code"])["error_code"] in (
                "ModelArts.6308", "ModelArts.6307")


# --- capacity -------------------------------------------------------------------------------

SINGLE = "modelarts.vm.cpu.single"


def test_start_without_capacity_6360(api: httpx.Client) -> None:
    first = reach(api, "STOPPED", flavor=SINGLE, name="first")
    holder = None
    try:
        holder = wait_for_status(api, create(api, name="holder", flavor=SINGLE)["id"], "RUNNING",
                                 timeout=30)
        assert holder["flavor_details"]["status"] == "soldOut"
        time.sleep(0.002)
        assert_error(act(api, first["id"], "start"), "ModelArts.6360")
        after = ok(api.get(f"/{first['id']}"))
        assert after["status"] == "STOPPED"
        assert after["latest_update_timestamp"] == first["latest_update_timestamp"]
        assert after["flavor_details"]["status"] == "soldOut"
        # a non-free flavor never queues: create is refused too
        assert_error(api.post("", json=build(name="third", flavor=SINGLE)), "ModelArts.6329")
        # the state table comes before the capacity check
        assert_error(act(api, first["id"], "stop"), "ModelArts.6307")
    finally:
        if holder is not None:
            remove(api, holder["id"])
    assert ok(act(api, first["id"], "start"))["current_status"] == "STARTING"
    wait_for_status(api, first["id"], "RUNNING", timeout=30)
    remove(api, first["id"])


def test_every_action_is_known_to_the_table() -> None:
    assert set(ACTIONS) <= set(OPERATIONS)
