"""DELETE: contract §2.5 (response, tombstones, what is freed, errors)."""

from __future__ import annotations

import time

import httpx

from tests.api.helpers import act, assert_error, create, listing, ok, remove
from tests.api.test_action import reach
from tests.api.test_get import assert_instance_shape
from tests.server import wait_for_status


def test_response_echoes_the_path_value(api: httpx.Client) -> None:
    stopped = reach(api, "STOPPED")
    response = api.delete(f"/{stopped['id']}/")
    assert ok(response) == {"instance_id": stopped["id"]}


def test_the_instance_leaves_every_view_at_once(api: httpx.Client) -> None:
    stopped = reach(api, "STOPPED")
    time.sleep(0.002)
    ok(api.delete(f"/{stopped['id']}"))
    for response in (api.get(f"/{stopped['id']}"), api.delete(f"/{stopped['id']}"),
                     api.put(f"/{stopped['id']}", json={}),
                     act(api, stopped["id"], "start")):
        assert_error(response, "ModelArts.6309")
    assert listing(api, show_self="false")["total_count"] == 0
    tombs = listing(api, status="DELETED")
    assert tombs["total_count"] == 1
    tomb = tombs["instances"][0]
    assert_instance_shape(tomb)
    assert tomb["status"] == "DELETED"
    assert int(tomb["latest_update_timestamp"]) > int(stopped["latest_update_timestamp"])


def test_running_instance_must_be_stopped_first(api: httpx.Client) -> None:
    running = reach(api, "RUNNING")
    error = assert_error(api.delete(f"/{running['id']}"), "ModelArts.6304")
    assert "stop" in error["error_message"].lower()
    assert ok(api.get(f"/{running['id']}"))["status"] == "RUNNING"


def test_unknown_id(api: httpx.Client) -> None:
    for unknown in ("DE-7d558ef8-c73d-11ea-964c-0255ac100033",
                    "6fa459ea-ee8a-3ca4-894e-db77e160355e"):
        assert_error(api.delete(f"/{unknown}"), "ModelArts.6309")


def test_name_and_quota_are_freed(api: httpx.Client) -> None:
    first = create(api, name="reuse")
    remove(api, first["id"])
    second = create(api, name="reuse")
    wait_for_status(api, second["id"], "RUNNING", timeout=30)
    names = [i["name"] for i in listing(api, status="DELETED")["instances"]]
    assert names == ["reuse"]
    assert [i["id"] for i in listing(api)["instances"]] == [second["id"]]
