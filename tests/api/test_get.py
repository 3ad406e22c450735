"""GET one instance: the full Instance shape of contract §3.1, types of §1.5, and 6309."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import httpx
import pytest

from tests.api.helpers import (
    CPU_FLAVOR,
    CPU_PROFILE,
    DEDICATED_POOL,
    FAILING_PROFILE,
    FREE_FLAVOR,
    act,
    assert_error,
    create,
    ok,
    remove,
)
from tests.conftest import client_for
from tests.server import ServerProcess, wait_for_status

ID_RE = re.compile(r"^DE-[0-9a-f]{8}-[0-9a-f]{4}-1[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$")
MS_RE = re.compile(r"^[0-9]{13}$")

ALWAYS = {"id", "name", "description", "status", "creation_timestamp",
          "latest_update_timestamp", "profile", "flavor", "flavor_details", "spec", "workspace",
          "ai_project", "user"}
WHEN_APPLICABLE = {"pool", "error_code", "queuing_info"}
SPEC_ALWAYS = {"storage", "extend_storage", "auto_stop", "annotations", "repository",
               "failed_reasons", "extend_params"}
SPEC_WHEN_APPLICABLE = {"resource_reserved_timestamp"}
FAILED = {"CREATE_FAILED", "START_FAILED", "RESIZE_FAILED", "UNAVAILABLE"}
QUEUED = {"CREATE_QUEUING", "START_QUEUING"}
STATUSES = {"CREATE_QUEUING", "CREATING", "CREATE_FAILED", "START_QUEUING", "READY_TO_START",
            "STARTING", "RESTARTING", "START_FAILED", "RUNNING", "STOPPING", "STOPPED",
            "UNAVAILABLE", "DELETED", "RESIZING", "RESIZE_FAILED"}


def assert_instance_shape(body: dict[str, Any]) -> None:
    """Everything §3 says about an Instance that does not depend on the request."""
    assert ALWAYS <= set(body) <= ALWAYS | WHEN_APPLICABLE, set(body) ^ ALWAYS
    assert ID_RE.fullmatch(body["id"]) and len(body["id"]) == 39
    assert isinstance(body["name"], str) and isinstance(body["description"], str)
    status = body["status"]
    assert status in STATUSES
    for key in ("creation_timestamp", "latest_update_timestamp"):
        assert isinstance(body[key], str) and MS_RE.fullmatch(body[key]), body[key]
    assert int(body["latest_update_timestamp"]) >= int(body["creation_timestamp"])

    profile = body["profile"]
    assert {"id", "name", "description", "de_type", "flavor_type", "provision"} <= set(profile)
    assert set(profile) <= {"id", "name", "description", "de_type", "flavor_type", "provision",
                            "labels"}
    assert profile["de_type"] == "Notebook"
    assert profile["flavor_type"] in ("CPU", "GPU", "Ascend")
    provision = profile["provision"]
    assert provision["type"] == "Docker"
    assert set(provision) <= {"type", "spec", "annotations"}
    assert provision["spec"]["engine"] == "CCE"
    params = provision["spec"]["params"]
    assert set(params) == {"namespace", "image_name", "image_tag", "annotations"}

    details = body["flavor_details"]
    assert {"name", "status", "type", "params"} <= set(details)
    assert details["name"] == body["flavor"]
    assert details["status"] in ("onSale", "soldOut")
    assert details["type"] in ("CPU", "GPU", "ASCEND")
    assert isinstance(details["params"], dict)
    assert "params_extends" not in details
    for key in ("queuing_num", "queue_left_time", "instance_num", "duration", "store_time"):
        if key in details:
            assert type(details[key]) is int, key

    spec = body["spec"]
    assert SPEC_ALWAYS <= set(spec) <= SPEC_ALWAYS | SPEC_WHEN_APPLICABLE, set(spec)
    assert spec["repository"] is None
    assert spec["extend_params"] is None
    assert spec["storage"]["type"] in ("obs", "obsfs", "evs")
    assert spec["extend_storage"] is None or isinstance(spec["extend_storage"], list)
    auto_stop = spec["auto_stop"]
    assert type(auto_stop["enable"]) is bool and type(auto_stop["prompt"]) is bool
    assert set(auto_stop) <= {"enable", "duration", "prompt", "stop_timestamp", "remain_time"}
    if "duration" in auto_stop:
        assert type(auto_stop["duration"]) is int
    countdown = {"stop_timestamp", "remain_time"} & set(auto_stop)
    assert countdown in (set(), {"stop_timestamp", "remain_time"})
    if countdown:
        assert status == "RUNNING"
        assert type(auto_stop["stop_timestamp"]) is int and auto_stop["stop_timestamp"] > 10**12
        assert type(auto_stop["remain_time"]) is int and auto_stop["remain_time"] >= 0
    annotations = spec["annotations"]
    assert {"target_domain", "url"} <= set(annotations)
    assert all(isinstance(v, str) for v in annotations.values())
    if status != "RUNNING":
        assert annotations["url"] == ""

    if status in FAILED and spec["failed_reasons"] is not None:
        assert body["error_code"] == spec["failed_reasons"]["code"]
    else:
        assert "error_code" not in body
    if spec["failed_reasons"] is not None:
        reasons = spec["failed_reasons"]
        assert set(reasons) == {"code", "message", "detail"}
        assert re.fullmatch(r"ModelArts\.[0-9]{4}", reasons["code"])
    assert ("queuing_info" in body) == (status in QUEUED)
    if "pool" in body:
        assert {"id", "name", "type"} <= set(body["pool"])
    assert set(body["workspace"]) == {"id"} and isinstance(body["workspace"]["id"], str)
    assert set(body["ai_project"]) == {"id"}
    assert set(body["user"]) == {"id", "name"}
    assert re.fullmatch(r"[0-9a-f]{32}", body["user"]["id"])


def test_create_response_shape(api: httpx.Client) -> None:
    body = create(api)
    assert_instance_shape(body)
    assert body["status"] == "CREATING"
    assert body["creation_timestamp"] == body["latest_update_timestamp"]
    assert abs(int(body["creation_timestamp"]) - time.time() * 1000) < 60_000
    assert body["spec"]["failed_reasons"] is None
    assert body["spec"]["extend_storage"] is None
    assert body["spec"]["annotations"]["url"] == ""
    assert "stop_timestamp" not in body["spec"]["auto_stop"]


def test_running_instance(api: httpx.Client, server: ServerProcess) -> None:
    created = create(api)
    body = wait_for_status(api, created["id"], "RUNNING", timeout=30)
    assert_instance_shape(body)
    assert body["spec"]["annotations"]["url"]
    assert body["spec"]["annotations"]["target_domain"] == f"http://127.0.0.1:{server.port}"
    assert body["spec"]["auto_stop"] == {"enable": False, "prompt": True}
    assert set(body) == ALWAYS
    assert body["profile"]["id"] == CPU_PROFILE
    assert body["profile"]["provision"]["spec"]["params"] == {
        "namespace": "atelier", "image_name": "mul-kernel-cpu-cp36", "image_tag": "2.0.5-B003",
        "annotations": None}
    assert body["profile"]["provision"]["annotations"] == {
        "category": "Multi-Engine 1.0 (python3)", "type": "system"}
    details = body["flavor_details"]
    assert details == {
        "name": CPU_FLAVOR, "status": "onSale", "type": "CPU",
        "params": {"CPU": 2, "GPU": 0, "memory": "8GiB"}, "promo_type": "NoDiscount",
        "storage_list": ["obs", "evs"], "is_permitted": True, "instance_num": 1,
        "store_time": -1}
    # the status change bumped latest_update_timestamp
    assert int(body["latest_update_timestamp"]) >= int(created["latest_update_timestamp"])


def test_running_with_auto_stop_has_the_countdown(api: httpx.Client) -> None:
    created = create(api, **{"spec.auto_stop": {"enable": True, "duration": 3600}})
    assert "stop_timestamp" not in created["spec"]["auto_stop"]
    body = wait_for_status(api, created["id"], "RUNNING", timeout=30)
    assert_instance_shape(body)
    auto_stop = body["spec"]["auto_stop"]
    now_ms = time.time() * 1000
    assert 3_590_000 < auto_stop["stop_timestamp"] - now_ms <= 3_601_000
    assert 3590 <= auto_stop["remain_time"] <= 3600
    # stop_timestamp = time of entering RUNNING + duration
    assert auto_stop["stop_timestamp"] - 3_600_000 >= int(created["creation_timestamp"])


def test_free_flavor_details(api: httpx.Client) -> None:
    body = wait_for_status(api, create(api, flavor=FREE_FLAVOR)["id"], "RUNNING", timeout=30)
    assert_instance_shape(body)
    details = body["flavor_details"]
    assert details["promo_type"] == "Free"
    assert details["duration"] == 3600
    # the free flavor's forced duration arms a countdown even without auto-stop
    assert 3590 <= body["spec"]["auto_stop"]["remain_time"] <= 3600


def test_stopped_instance_has_no_countdown(api: httpx.Client) -> None:
    created = create(api, **{"spec.auto_stop": {"enable": True, "duration": 3600}})
    wait_for_status(api, created["id"], "RUNNING", timeout=30)
    ok(act(api, created["id"], "stop"))
    body = wait_for_status(api, created["id"], "STOPPED", timeout=30)
    assert_instance_shape(body)
    assert body["spec"]["auto_stop"] == {"enable": True, "duration": 3600, "prompt": True}
    assert body["spec"]["annotations"]["url"] == ""


def test_create_failed_carries_error_code(api: httpx.Client) -> None:
    created = create(api, profile_id=FAILING_PROFILE)
    body = wait_for_status(api, created["id"], "CREATE_FAILED", timeout=30)
    assert_instance_shape(body)
    assert body["error_code"] == body["spec"]["failed_reasons"]["code"]
    assert body["spec"]["failed_reasons"]["message"]
    assert isinstance(body["spec"]["failed_reasons"]["detail"], dict)


def test_instance_in_a_pool(api: httpx.Client, project: str) -> None:
    body = ok(api.get(f"/{create(api, pool={'id': DEDICATED_POOL})['id']}"))
    assert_instance_shape(body)
    assert body["pool"] == {"id": DEDICATED_POOL, "name": "analytics-pool",
                            "type": "USER_DEFINED", "owner": {"project_id": project}}


def test_get_equals_the_list_element(api: httpx.Client) -> None:
    created = create(api)
    running = wait_for_status(api, created["id"], "RUNNING", timeout=30)
    listed = ok(api.get("", params={"de_type": "Notebook"}))["instances"]
    assert listed == [running]


@pytest.mark.parametrize("suffix", ["", "/"])
def test_trailing_slash(api: httpx.Client, suffix: str) -> None:
    created = create(api)
    assert ok(api.get(f"/{created['id']}{suffix}"))["id"] == created["id"]


def test_unknown_ids_6309(api: httpx.Client) -> None:
    created = create(api)
    bare = created["id"][len("DE-"):]
    for unknown in ["DE-00000000-0000-1000-8000-000000000000", bare, created["id"].upper(),
                    created["id"] + "x", "x", "%20", "DE-" + "é", "a" * 300]:
        assert_error(api.get(f"/{unknown}"), "ModelArts.6309")


def test_other_projects_instance_is_not_found(api: httpx.Client, server: ServerProcess) -> None:
    created = create(api)
    with client_for(server, project=uuid.uuid4().hex) as other:
        for response in (
            other.get(f"/{created['id']}"),
            other.put(f"/{created['id']}", json={"description": "mine"}),
            other.delete(f"/{created['id']}"),
            other.post(f"/{created['id']}/action", json={"action": "stop"}),
        ):
            assert_error(response, "ModelArts.6309")
    assert ok(api.get(f"/{created['id']}"))["description"] == ""


def test_deleted_instance_is_not_found(api: httpx.Client) -> None:
    created = create(api)
    remove(api, created["id"])
    assert_error(api.get(f"/{created['id']}"), "ModelArts.6309")


def test_token_route(api: httpx.Client) -> None:
    failed = create(api, name="failed", profile_id=FAILING_PROFILE)
    wait_for_status(api, failed["id"], "CREATE_FAILED", timeout=30)
    assert_error(api.get(f"/{failed['id']}/token"), "ModelArts.6327")
    created = create(api)
    wait_for_status(api, created["id"], "RUNNING", timeout=30)
    body = ok(api.get(f"/{created['id']}/token"))
    # A signed grant for the proxy (its use is tested in test_proxy.py), never the
    # notebook server's own token.
    assert set(body) == {"token"} and re.fullmatch(r"dmg_[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+",
                                                   body["token"])
    ok(act(api, created["id"], "stop"))
    wait_for_status(api, created["id"], "STOPPED", timeout=30)
    assert_error(api.get(f"/{created['id']}/token"), "ModelArts.6327")
    assert_error(api.get("/DE-unknown/token"), "ModelArts.6309")
