"""The server answers the contract's basic exchange end to end (fake backend)."""

from __future__ import annotations

import httpx

from tests.conftest import MINIMAL_BODY
from tests.server import wait_for_status


def test_create_reaches_running_and_lists(api: httpx.Client) -> None:
    created = api.post("", json=MINIMAL_BODY)
    assert created.status_code == 200, created.text
    body = created.json()
    assert body["status"] == "CREATING"
    assert body["id"].startswith("DE-") and len(body["id"]) == 39
    assert body["creation_timestamp"] == body["latest_update_timestamp"]
    running = wait_for_status(api, body["id"], "RUNNING", timeout=30)
    assert running["spec"]["annotations"]["url"]
    listed = api.get("", params={"de_type": "Notebook"}).json()
    assert listed["total_count"] == 1
    assert [i["id"] for i in listed["instances"]] == [body["id"]]
