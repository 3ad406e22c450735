"""The queue, as a user meets it, against a real server (contract §4.5, §5):

a free flavor of capacity 2 filled with 5 instances shows 2 RUNNING and 3 queued with
ranks 1, 2, 3 and non-decreasing ``end_timestamp``; stopping one admits the head at once
(by the stop's own notification: the sweep runs only every 30 s here) and moves the
others up; ``dequeue`` leaves the queue; a full flavor that is not free answers 6329 to
a create and 6360 to a start. All of it again with the server restarted in the middle,
so the queue and the slots are shown to live in the store.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.helpers import act, assert_error, ok
from tests.server import ServerProcess, wait_for_status

PROFILE = "Multi-Engine 1.0 (python3)-cpu"
FREE = "modelarts.vm.cpu.free"
PAID = "modelarts.vm.cpu.2u"
SWEEP_SECONDS = 30
CATALOG = f"""
profiles:
  - id: "{PROFILE}"
    flavor_type: CPU
flavors:
  - name: {FREE}
    type: CPU
    promo_type: Free
    params: {{CPU: 1, memory: 1GiB}}
    capacity: 2
  - name: {PAID}
    type: CPU
    params: {{CPU: 1, memory: 1GiB}}
    capacity: 1
"""


def _body(name: str, flavor: str = FREE, auto_stop: int = 3600) -> dict[str, Any]:
    return {"name": name, "profile_id": PROFILE, "flavor": flavor,
            "spec": {"storage": {"type": "evs"},
                     "auto_stop": {"enable": True, "duration": auto_stop}}}


def _queue(api: httpx.Client, ids: list[str]) -> list[tuple[str, int | None]]:
    views = [ok(api.get(f"/{i}")) for i in ids]
    return [(v["status"], (v.get("queuing_info") or {}).get("rank")) for v in views]


@pytest.mark.parametrize("restart", [False, True], ids=["one-run", "restart-in-the-middle"])
def test_a_queue_from_full_to_admitted_to_dequeued(
    server_factory: Callable[..., ServerProcess], tmp_path: Path, restart: bool
) -> None:
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(CATALOG, encoding="utf-8")
    server = server_factory(env={
        "DEMANAGER_CATALOG_FILE": str(catalog),
        "DEMANAGER_RECONCILE_INTERVAL_SECONDS": str(SWEEP_SECONDS),
        "DEMANAGER_LEASE_SECONDS": str(SWEEP_SECONDS * 3),
    })
    with server.client() as api:
        # Two holders with different auto-stops, then three that must wait.
        holders = [ok(api.post("", json=_body(f"holder-{n}", auto_stop=s)))["id"]
                   for n, s in enumerate((7200, 3600))]
        for i in holders:
            wait_for_status(api, i, "RUNNING")
        waiting = [ok(api.post("", json=_body(f"waiting-{n}")))["id"] for n in range(3)]
        assert _queue(api, waiting) == [("CREATE_QUEUING", 1), ("CREATE_QUEUING", 2),
                                        ("CREATE_QUEUING", 3)]
        ends = [ok(api.get(f"/{i}"))["queuing_info"]["end_timestamp"] for i in waiting]
        assert ends == sorted(ends), ends
        flavor = ok(api.get(f"/{waiting[0]}"))["flavor_details"]
        assert (flavor["status"], flavor["queuing_num"]) == ("soldOut", 3)

        if restart:
            server.stop()
            server.start()
            # The queue and the slots taken survived: same ranks, still sold out.
            assert _queue(api, waiting) == [("CREATE_QUEUING", 1), ("CREATE_QUEUING", 2),
                                            ("CREATE_QUEUING", 3)]
            assert ok(api.get(f"/{waiting[0]}"))["flavor_details"]["status"] == "soldOut"

        # A slot frees: the head gets it at once, the others move up.
        ok(act(api, holders[1], "stop"))
        freed = int(wait_for_status(api, holders[1], "STOPPED")["latest_update_timestamp"])
        admitted = wait_for_status(api, waiting[0], {"CREATING", "RUNNING"}, timeout=10)
        reserved = admitted["spec"]["resource_reserved_timestamp"]
        # Well inside the 30 s sweep: the write that freed the slot woke the head.
        # (bench/queue.py measures how soon; this shows that it is the notification.)
        assert 0 <= reserved - freed < SWEEP_SECONDS * 1000 // 10, (reserved, freed)
        assert _queue(api, waiting[1:]) == [("CREATE_QUEUING", 1), ("CREATE_QUEUING", 2)]
        wait_for_status(api, waiting[0], "RUNNING")

        # dequeue leaves the queue; the one behind moves up.
        assert ok(act(api, waiting[1], "dequeue")) == {
            "current_status": "STOPPED", "previous_state": "CREATE_QUEUING"}
        assert _queue(api, waiting[1:]) == [("STOPPED", None), ("CREATE_QUEUING", 1)]
        flavor = ok(api.get(f"/{waiting[2]}"))["flavor_details"]
        assert (flavor["status"], flavor["queuing_num"]) == ("soldOut", 1)

        # A flavor that is not free never queues: full, it refuses.
        paid = ok(api.post("", json=_body("paid-0", PAID)))["id"]
        wait_for_status(api, paid, "RUNNING")
        assert_error(api.post("", json=_body("paid-1", PAID)), "ModelArts.6329")
        ok(act(api, paid, "stop"))
        wait_for_status(api, paid, "STOPPED")
        other = ok(api.post("", json=_body("paid-2", PAID)))["id"]
        assert_error(act(api, paid, "start"), "ModelArts.6360")
        assert ok(api.get(f"/{paid}"))["status"] == "STOPPED"  # the refusal changed nothing
        wait_for_status(api, other, "RUNNING")
