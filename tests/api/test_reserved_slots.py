"""Against a real server: the queue head's reservation, and estimates that learn from
observed runs (contract §4.2, §4.5, §3.16)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.api.helpers import act, ok
from tests.server import ServerProcess, wait_for_status

PROFILE = "Multi-Engine 1.0 (python3)-cpu"
FREE = "modelarts.vm.cpu.free"
CATALOG = f"""
profiles:
  - id: "{PROFILE}"
    flavor_type: CPU
flavors:
  - name: {FREE}
    type: CPU
    promo_type: Free
    params: {{CPU: 1, memory: 4GiB}}
    capacity: 1
"""
BODY: dict[str, Any] = {"profile_id": PROFILE, "flavor": FREE,
                        "spec": {"storage": {"type": "evs"}}}


def _server(server_factory: Callable[..., ServerProcess], tmp_path: Path) -> ServerProcess:
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(CATALOG, encoding="utf-8")
    return server_factory(env={"DEMANAGER_CATALOG_FILE": str(catalog)})


def test_the_queue_head_is_reserved_the_moment_a_slot_frees(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = _server(server_factory, tmp_path)
    with server.client() as api:
        head = ok(api.post("", json={**BODY, "name": "head"}))
        wait_for_status(api, head["id"], "RUNNING")
        assert "resource_reserved_timestamp" not in head["spec"]  # created with a free slot
        ok(act(api, head["id"], "stop"))
        wait_for_status(api, head["id"], "STOPPED")
        holder = ok(api.post("", json={**BODY, "name": "holder"}))
        wait_for_status(api, holder["id"], "RUNNING")
        assert ok(act(api, head["id"], "start"))["current_status"] == "START_QUEUING"
        assert "resource_reserved_timestamp" not in ok(api.get(f"/{head['id']}"))["spec"]

        ok(act(api, holder["id"], "stop"))
        freed = int(wait_for_status(api, holder["id"], "STOPPED")["latest_update_timestamp"])
        admitted = wait_for_status(api, head["id"], {"READY_TO_START", "STARTING", "RUNNING"})
        reserved = admitted["spec"]["resource_reserved_timestamp"]
        # The STOPPED write that gave the slot back wakes the head at once.
        assert 0 <= reserved - freed < 5_000, (reserved, freed)
        running = wait_for_status(api, head["id"], "RUNNING")
        assert running["spec"]["resource_reserved_timestamp"] == reserved

        ok(act(api, head["id"], "stop"))
        stopped = wait_for_status(api, head["id"], "STOPPED")
        assert "resource_reserved_timestamp" not in stopped["spec"]


def test_estimates_follow_the_runs_observed(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = _server(server_factory, tmp_path)
    with server.client() as api:
        first = ok(api.post("", json={**BODY, "name": "first"}))
        wait_for_status(api, first["id"], "RUNNING")
        second = ok(api.post("", json={**BODY, "name": "second"}))
        # No run has finished yet: the holder is assumed to run an hour.
        guessed = ok(api.get(f"/{second['id']}"))["queuing_info"]["remain_time"]
        assert guessed > 3000

        ok(act(api, first["id"], "stop"))  # a run of a second or two
        wait_for_status(api, second["id"], "RUNNING")
        third = ok(api.post("", json={**BODY, "name": "third"}))
        assert third["status"] == "CREATE_QUEUING"
        observed = ok(api.get(f"/{third['id']}"))["queuing_info"]["remain_time"]
        assert observed < 60, observed
        assert ok(api.get(f"/{third['id']}"))["flavor_details"]["queue_left_time"] < 120
