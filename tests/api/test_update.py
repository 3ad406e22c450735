"""PUT: contract §2.4 (partial merge, no-op, errors, immutable fields, check order)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.api.helpers import DEDICATED_POOL, act, assert_error, create, ok
from tests.api.test_get import assert_instance_shape
from tests.server import wait_for_status


@pytest.fixture
def instance(api: httpx.Client) -> dict[str, Any]:
    created = create(api, description="before",
                     **{"spec.auto_stop": {"enable": False, "duration": 7200, "prompt": False},
                        "spec.annotations": {"team": "a"}})
    return wait_for_status(api, created["id"], "RUNNING", timeout=30)


def put(api: httpx.Client, instance_id: str, body: Any) -> httpx.Response:
    return api.put(f"/{instance_id}", json=body)


MERGES = [
    pytest.param({"description": "after"}, "after", {"enable": False, "duration": 7200,
                                                     "prompt": False}, id="description"),
    pytest.param({"description": ""}, "", {"enable": False, "duration": 7200, "prompt": False},
                 id="description-cleared"),
    pytest.param({"description": None}, "before", {"enable": False, "duration": 7200,
                                                   "prompt": False}, id="description-null"),
    pytest.param({"spec": {"auto_stop": {"prompt": True}}}, "before",
                 {"enable": False, "duration": 7200, "prompt": True}, id="prompt-only"),
    pytest.param({"spec": {"auto_stop": {"duration": 3600}}}, "before",
                 {"enable": False, "duration": 3600, "prompt": False}, id="duration-only"),
    pytest.param({"spec": {"auto_stop": {"enable": True, "duration": 86400}}}, "before",
                 {"enable": True, "duration": 86400, "prompt": False}, id="enable"),
    pytest.param({"spec": {"auto_stop": {"enable": False}}}, "before",
                 {"enable": False, "duration": 7200, "prompt": False}, id="disable-again"),
    pytest.param({"spec": {"auto_stop": {}}}, "before",
                 {"enable": False, "duration": 7200, "prompt": False}, id="empty-auto-stop"),
    pytest.param({"spec": {"auto_stop": None}}, "before",
                 {"enable": False, "duration": 7200, "prompt": False}, id="auto-stop-null"),
    pytest.param({"spec": {}}, "before", {"enable": False, "duration": 7200, "prompt": False},
                 id="empty-spec"),
    pytest.param({"description": "both", "spec": {"auto_stop": {"prompt": True}}}, "both",
                 {"enable": False, "duration": 7200, "prompt": True}, id="both"),
    pytest.param({"id": "DE-x", "status": "STOPPED", "creation_timestamp": "1",
                  "spec": {"log_path": "/x", "failed_reasons": None, "extend_params": {}},
                  "user": {"id": "x"}, "unknown": 1, "description": "ignored-rest"},
                 "ignored-rest", {"enable": False, "duration": 7200, "prompt": False},
                 id="response-only-and-unknown-ignored"),
]


@pytest.mark.parametrize(("body", "description", "auto_stop"), MERGES)
def test_partial_merge(api: httpx.Client, instance: dict[str, Any], body: dict[str, Any],
                       description: str, auto_stop: dict[str, Any]) -> None:
    updated = ok(put(api, instance["id"], body))
    assert_instance_shape(updated)
    assert updated["description"] == description
    assert updated["spec"]["auto_stop"] == auto_stop
    assert updated["status"] == "RUNNING"
    assert updated["id"] == instance["id"]
    assert updated["spec"]["annotations"]["team"] == "a"
    assert ok(api.get(f"/{instance['id']}")) == updated


def test_empty_body_is_a_no_op(api: httpx.Client, instance: dict[str, Any]) -> None:
    for body in ({}, {"description": "before"}, {"spec": {"auto_stop": {"prompt": False}}},
                 {"unknown": 1}):
        updated = ok(put(api, instance["id"], body))
        assert updated["latest_update_timestamp"] == instance["latest_update_timestamp"]
        assert updated == instance


def test_a_change_bumps_latest_update_timestamp(api: httpx.Client,
                                                instance: dict[str, Any]) -> None:
    time.sleep(0.005)  # a new millisecond
    updated = ok(put(api, instance["id"], {"description": "after"}))
    assert int(updated["latest_update_timestamp"]) > int(instance["latest_update_timestamp"])
    assert updated["creation_timestamp"] == instance["creation_timestamp"]


IMMUTABLE = [
    pytest.param({"name": "renamed"}, "name", id="name"),
    pytest.param({"profile_id": "Multi-Engine 1.0 (python3)-gpu"}, "profile_id", id="profile"),
    pytest.param({"flavor": "modelarts.vm.cpu.8u"}, "flavor", id="flavor"),
    pytest.param({"workspace": {"id": "ws-analytics"}}, "workspace", id="workspace"),
    pytest.param({"pool": {"id": DEDICATED_POOL}}, "pool", id="pool"),
    pytest.param({"ai_project": {"id": "other"}}, "ai_project", id="ai_project"),
    pytest.param({"spec": {"storage": {"type": "evs"}}}, "storage", id="spec.storage"),
    pytest.param({"spec": {"extend_storage": []}}, "extend_storage", id="spec.extend_storage"),
    pytest.param({"spec": {"annotations": {"team": "b"}}}, "annotations",
                 id="spec.annotations"),
    pytest.param({"name": 5}, "name", id="name-any-value"),
    pytest.param({"description": "ok", "flavor": "x"}, "flavor", id="with-valid-change"),
]


@pytest.mark.parametrize(("body", "field"), IMMUTABLE)
def test_immutable_fields_6347(api: httpx.Client, instance: dict[str, Any],
                               body: dict[str, Any], field: str) -> None:
    error = assert_error(put(api, instance["id"], body), "ModelArts.6347")
    assert field in error["error_message"] and "RUNNING" in error["error_message"]
    assert ok(api.get(f"/{instance['id']}")) == instance  # nothing changed


REJECTED = [
    pytest.param({"description": "a&b"}, "6334", id="description-char"),
    pytest.param({"description": "a/b"}, "6334", id="description-slash"),
    pytest.param({"description": "x" * 513}, "6336", id="description-long"),
    pytest.param({"description": 5}, "6332", id="description-type"),
    pytest.param({"spec": "x"}, "6332", id="spec-type"),
    pytest.param({"spec": []}, "6332", id="spec-array"),
    pytest.param({"spec": {"auto_stop": "on"}}, "6332", id="auto-stop-type"),
    pytest.param({"spec": {"auto_stop": {"enable": "true"}}}, "6332", id="enable-type"),
    pytest.param({"spec": {"auto_stop": {"enable": True, "duration": "3600"}}}, "6332",
                 id="duration-type"),
    pytest.param({"spec": {"auto_stop": {"enable": True, "duration": 3600.0}}}, "6332",
                 id="duration-float"),
    pytest.param({"spec": {"auto_stop": {"prompt": 1}}}, "6332", id="prompt-type"),
    pytest.param({"spec": {"auto_stop": {"enable": True}}}, "6348", id="enable-no-duration"),
    pytest.param({"spec": {"auto_stop": {"enable": True, "duration": None}}}, "6348",
                 id="enable-null-duration"),
    pytest.param({"spec": {"auto_stop": {"enable": True, "duration": 0}}}, "6349",
                 id="duration-low"),
    pytest.param({"spec": {"auto_stop": {"enable": True, "duration": 86401}}}, "6349",
                 id="duration-high"),
    # check order: types (6332) before values, values before immutable fields (6347)
    pytest.param({"description": 5, "name": "x"}, "6332", id="order-type-before-immutable"),
    pytest.param({"description": "a&b", "spec": {"auto_stop": {"enable": 1}}}, "6332",
                 id="order-type-before-value"),
    pytest.param({"description": "a<b", "flavor": "x"}, "6334", id="order-value-before-6347"),
    pytest.param({"spec": {"auto_stop": {"enable": True}, "storage": {}}}, "6348",
                 id="order-6348-before-6347"),
    pytest.param({"spec": {"auto_stop": {"enable": True, "duration": 1_000_000}},
                  "workspace": {"id": "0"}}, "6349", id="order-6349-before-6347"),
]


@pytest.mark.parametrize(("body", "code"), REJECTED)
def test_rejected(api: httpx.Client, instance: dict[str, Any], body: dict[str, Any],
                  code: str) -> None:
    assert_error(put(api, instance["id"], body), f"ModelArts.{code}")
    assert ok(api.get(f"/{instance['id']}")) == instance


@pytest.mark.parametrize("raw", [b"", b"{", b"[]", b"null", b'"x"', b"\xff"])
def test_unreadable_body_6400(api: httpx.Client, instance: dict[str, Any], raw: bytes) -> None:
    assert_error(api.put(f"/{instance['id']}", content=raw), "ModelArts.6400")


def test_unknown_instance_comes_first(api: httpx.Client) -> None:
    for raw in (b"{", b'{"description": 5}', b'{"name": "x"}'):
        assert_error(api.put("/DE-unknown", content=raw), "ModelArts.6309")


def test_enabling_while_running_applies_at_next_start(api: httpx.Client) -> None:
    created = create(api)
    wait_for_status(api, created["id"], "RUNNING", timeout=30)
    updated = ok(put(api, created["id"], {"spec": {"auto_stop": {"enable": True,
                                                                 "duration": 3600}}}))
    assert updated["spec"]["auto_stop"] == {"enable": True, "duration": 3600, "prompt": True}
    assert ok(api.get(f"/{created['id']}"))["spec"]["auto_stop"] == updated["spec"]["auto_stop"]
    ok(act(api, created["id"], "restart"))
    restarted = wait_for_status(api, created["id"], "RUNNING", timeout=30)
    assert 3590 <= restarted["spec"]["auto_stop"]["remain_time"] <= 3600


def test_duration_change_while_running_keeps_the_current_countdown(api: httpx.Client) -> None:
    created = create(api, **{"spec.auto_stop": {"enable": True, "duration": 3600}})
    running = wait_for_status(api, created["id"], "RUNNING", timeout=30)
    stop_at = running["spec"]["auto_stop"]["stop_timestamp"]
    updated = ok(put(api, created["id"], {"spec": {"auto_stop": {"duration": 7200}}}))
    assert updated["spec"]["auto_stop"]["duration"] == 7200
    assert updated["spec"]["auto_stop"]["stop_timestamp"] == stop_at


def test_disabling_cancels_the_countdown(api: httpx.Client) -> None:
    created = create(api, **{"spec.auto_stop": {"enable": True, "duration": 3600}})
    running = wait_for_status(api, created["id"], "RUNNING", timeout=30)
    assert "stop_timestamp" in running["spec"]["auto_stop"]
    updated = ok(put(api, created["id"], {"spec": {"auto_stop": {"enable": False}}}))
    assert updated["spec"]["auto_stop"] == {"enable": False, "duration": 3600, "prompt": True}
    assert ok(api.get(f"/{created['id']}"))["spec"]["auto_stop"] == updated["spec"]["auto_stop"]


@pytest.mark.parametrize("status", ["STOPPED", "CREATE_FAILED"])
def test_allowed_in_resting_statuses(api: httpx.Client, status: str) -> None:
    if status == "STOPPED":
        created = create(api)
        wait_for_status(api, created["id"], "RUNNING", timeout=30)
        ok(act(api, created["id"], "stop"))
    else:
        created = create(api, profile_id="Failing profile")
    view = wait_for_status(api, created["id"], status, timeout=30)
    updated = ok(put(api, created["id"], {"description": "changed",
                                          "spec": {"auto_stop": {"enable": True,
                                                                 "duration": 3600}}}))
    assert updated["status"] == status
    assert updated["description"] == "changed"
    assert "stop_timestamp" not in updated["spec"]["auto_stop"]
    error = assert_error(put(api, created["id"], {"name": "x"}), "ModelArts.6347")
    assert status in error["error_message"]
    assert view["spec"]["failed_reasons"] == updated["spec"]["failed_reasons"]


def test_defect_05_disabling_auto_stop_keeps_a_free_flavors_forced_stop(
        api: httpx.Client) -> None:
    # §4.4: a free flavor's run stops after the flavor's duration (3600 s in the test
    # catalog) whatever the caller's own countdown says; turning that off must not
    # cancel the flavor's stop.
    created = create(api, flavor="modelarts.vm.cpu.free",
                     **{"spec.auto_stop": {"enable": True, "duration": 7200}})
    running = wait_for_status(api, created["id"], "RUNNING", timeout=30)
    forced = running["spec"]["auto_stop"]["stop_timestamp"]
    assert forced is not None
    updated = ok(put(api, created["id"], {"spec": {"auto_stop": {"enable": False}}}))
    assert updated["spec"]["auto_stop"]["enable"] is False
    assert updated["spec"]["auto_stop"].get("stop_timestamp") == forced
    assert ok(api.get(f"/{created['id']}"))["spec"]["auto_stop"].get("stop_timestamp") == forced
    ok(act(api, created["id"], "stop"))
