"""Queued instances show their rank and when a slot should free for them (§3.16, §4.5)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from tests.api.helpers import ok
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
    capacity: 2
    duration: 3600
"""


def test_queued_instances_show_rank_and_non_decreasing_estimates(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(CATALOG, encoding="utf-8")
    server = server_factory(
        env={"DEMANAGER_CATALOG_FILE": str(catalog), "DEMANAGER_MIN_AUTO_STOP_SECONDS": "60"}
    )

    def body(name: str, auto_stop: int) -> dict[str, object]:
        return {
            "name": name,
            "profile_id": PROFILE,
            "flavor": FREE,
            "spec": {
                "storage": {"type": "evs"},
                "auto_stop": {"enable": True, "duration": auto_stop},
            },
        }

    with server.client() as api:
        # Two holders whose auto-stop deadlines are known: in 10 and in 5 minutes.
        stops = []
        for name, seconds in (("long", 600), ("short", 300)):
            created = ok(api.post("", json=body(name, seconds)))
            running = wait_for_status(api, created["id"], "RUNNING")
            stops.append(running["spec"]["auto_stop"]["stop_timestamp"])
        long_stop, short_stop = stops

        queued = [ok(api.post("", json=body(f"waiting-{k}", 900))) for k in range(3)]
        assert [q["status"] for q in queued] == ["CREATE_QUEUING"] * 3

        before = int(time.time() * 1000)
        infos = [ok(api.get(f"/{q['id']}"))["queuing_info"] for q in queued]
        after = int(time.time() * 1000)

        assert [i["rank"] for i in infos] == [1, 2, 3]
        ends = [i["end_timestamp"] for i in infos]
        assert ends == sorted(ends)
        # The shorter auto-stop frees first, then the longer; the third waits for the
        # first waiter's own 15-minute run to end.
        assert ends == [short_stop, long_stop, short_stop + 900_000]
        for info, created in zip(infos, queued, strict=True):
            assert info["begin_timestamp"] <= int(created["creation_timestamp"]) + 1000
            assert (info["end_timestamp"] - after) // 1000 <= info["remain_time"]
            assert info["remain_time"] <= (info["end_timestamp"] - before) // 1000

        # A newcomer would wait for the second waiter's run: the flavor says so.
        flavor = ok(api.get(f"/{queued[0]['id']}"))["flavor_details"]
        assert flavor["status"] == "soldOut" and flavor["queuing_num"] == 3
        newcomer = long_stop + 900_000
        now = int(time.time() * 1000)
        assert abs(flavor["queue_left_time"] - (newcomer - now) / 1000) <= 5
