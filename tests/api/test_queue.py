"""Free flavors queue when full and the engine admits the head of the queue (§4.5)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.api.helpers import act, ok
from tests.server import ServerProcess, wait_for_status

PROFILE = "Multi-Engine 1.0 (python3)-cpu"
FREE = "modelarts.vm.cpu.free"

CATALOG = f"""
profiles:
  - id: "{PROFILE}"
    flavor_type: CPU
    launch: {{process: {{command: ["true"]}}}}
flavors:
  - name: {FREE}
    type: CPU
    promo_type: Free
    params: {{CPU: 1, memory: 4GiB}}
    capacity: 1
"""


def test_queued_instances_are_admitted_in_order_when_a_slot_frees(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(CATALOG, encoding="utf-8")
    server = server_factory(env={"DEMANAGER_CATALOG_FILE": str(catalog)})
    body = {"profile_id": PROFILE, "flavor": FREE, "spec": {"storage": {"type": "evs"}}}
    with server.client() as api:
        holder = ok(api.post("", json={**body, "name": "holder"}))
        wait_for_status(api, holder["id"], "RUNNING")

        first = ok(api.post("", json={**body, "name": "first"}))
        second = ok(api.post("", json={**body, "name": "second"}))
        assert first["status"] == second["status"] == "CREATE_QUEUING"
        assert first["queuing_info"]["rank"] == 1
        assert ok(api.get(f"/{second['id']}"))["queuing_info"]["rank"] == 2
        flavor = ok(api.get(f"/{first['id']}"))["flavor_details"]
        assert flavor["status"] == "soldOut" and flavor["queuing_num"] == 2

        ok(act(api, holder["id"], "stop"))
        running = wait_for_status(api, first["id"], "RUNNING")
        assert "queuing_info" not in running
        waiting = ok(api.get(f"/{second['id']}"))
        assert waiting["status"] == "CREATE_QUEUING" and waiting["queuing_info"]["rank"] == 1

        # A start while full queues too, behind the instance already waiting.
        assert ok(act(api, holder["id"], "start")) == {
            "current_status": "START_QUEUING", "previous_state": "STOPPED"}
        ok(act(api, first["id"], "stop"))
        wait_for_status(api, second["id"], "RUNNING")
        assert ok(api.get(f"/{holder['id']}"))["status"] == "START_QUEUING"
        ok(act(api, second["id"], "stop"))
        wait_for_status(api, holder["id"], "RUNNING")
