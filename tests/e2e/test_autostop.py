"""Auto-stop (contract §4.4) through a real server and a real notebook."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.server import ServerProcess, processes_of, wait_for_status

pytestmark = pytest.mark.slow


def test_running_instance_stops_at_stop_timestamp(
    server_factory: Callable[..., ServerProcess],
) -> None:
    server = server_factory(backend="process", env={"DEMANAGER_MIN_AUTO_STOP_SECONDS": "1"})
    body = {
        "name": "short-lived",
        "profile_id": "Multi-Engine 1.0 (python3)-cpu",
        "flavor": "modelarts.vm.cpu.2u",
        "spec": {"storage": {"type": "evs"}, "auto_stop": {"enable": True, "duration": 4}},
    }
    with server.client() as api:
        instance_id = api.post("", json=body).json()["id"]
        running = wait_for_status(api, instance_id, "RUNNING")
        auto_stop = running["spec"]["auto_stop"]
        stop_at = auto_stop["stop_timestamp"]
        assert isinstance(stop_at, int) and 0 <= auto_stop["remain_time"] <= 4
        assert stop_at - int(running["latest_update_timestamp"]) == 4000

        seen = {"RUNNING"}
        stopped_seen_at = 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            now_ms = time.time_ns() // 1_000_000
            status = api.get(f"/{instance_id}").json()["status"]
            seen.add(status)
            if status == "RUNNING":
                assert now_ms < stop_at + 3000, "still running well after stop_timestamp"
            if status in ("STOPPING", "STOPPED") and not stopped_seen_at:
                stopped_seen_at = now_ms
            if status == "STOPPED":
                break
            time.sleep(0.1)
        assert "STOPPED" in seen
        assert stopped_seen_at >= stop_at, "not stopped before its time"
        stopped = api.get(f"/{instance_id}").json()
        assert "stop_timestamp" not in stopped["spec"]["auto_stop"]
        assert "remain_time" not in stopped["spec"]["auto_stop"]
        assert processes_of(instance_id) == []
        api.delete(f"/{instance_id}")
