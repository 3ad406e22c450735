"""The lifecycle policy through a real server (fake backend): the maximum lifetime's
warning and stop, the stops route, and the extend route's answers to every kind of
request."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.api.helpers import assert_error, create, ok
from tests.server import DEMANAGER, ServerProcess, wait_for_status, wait_until

LIFETIME_S = 4
WARN_S = 2
EXTENSION_S = 10


def _policy_server(server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    return server_factory(backend="fake", env={
        "DEMANAGER_POLICY__MAX_LIFETIME_SECONDS": str(LIFETIME_S),
        "DEMANAGER_POLICY__WARN_BEFORE_SECONDS": str(WARN_S),
        "DEMANAGER_POLICY__MAX_EXTENSION_SECONDS": str(EXTENSION_S),
    })


def _cli(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DEMANAGER, "instances", *args, "--url", server.url, "--project", server.project,
         "--token", server.token],
        capture_output=True, text=True, timeout=60, env={**server.env, "COLUMNS": "200"},
    )


def _events(api: httpx.Client, instance_id: str) -> list[dict[str, Any]]:
    return list(ok(api.get(f"/{instance_id}/events", params={"limit": 1000}))["events"])


def test_a_run_past_its_lifetime_is_warned_then_stopped_saying_why(
    server_factory: Callable[..., ServerProcess],
) -> None:
    server = _policy_server(server_factory)
    with server.client() as api:
        instance_id = create(api)["id"]
        running = wait_for_status(api, instance_id, "RUNNING")
        stops = ok(api.get(f"/{instance_id}/stops"))
        [stop] = stops["stops"]
        assert stop["reason"] == "max_lifetime"
        assert stop["why"] == f"a run may last at most {LIFETIME_S} s"
        assert stop["at"] - int(running["latest_update_timestamp"]) <= LIFETIME_S * 1000
        assert stops["idle_timeout_seconds"] is None
        assert stops["extension_left_seconds"] == EXTENSION_S

        wait_for_status(api, instance_id, "STOPPED", timeout=30)
        events = _events(api, instance_id)
        kinds = [e["kind"] for e in events]
        assert kinds[kinds.index("ready"):] == [
            "ready", "auto_stop_warning", "stop_requested", "stopped"
        ]
        warning, request, stopped = events[-3:]
        assert warning["actor"] == request["actor"] == stopped["actor"] == "policy:max_lifetime"
        assert warning["detail"]["stop_at"] == stop["at"]
        assert warning["at"] <= stop["at"] - (WARN_S - 1) * 1000
        assert request["at"] >= stop["at"]
        assert stopped["detail"]["reason"] == f"max lifetime: a run may last at most {LIFETIME_S} s"
        assert ok(api.get(f"/{instance_id}/stops"))["stops"] == []

        families = {f.name: f for f in text_string_to_metric_families(
            httpx.get(f"{server.url}/metrics").text)}
        done = {
            (s.labels["action"], s.labels["reason"]): s.value
            for s in families["demanager_policy_actions"].samples
            if s.name == "demanager_policy_actions_total"
        }
        assert done == {("warn", "max_lifetime"): 1.0, ("stop", "max_lifetime"): 1.0}


def test_an_extension_postpones_the_stop_within_the_limit_and_past_it_changes_nothing(
    server_factory: Callable[..., ServerProcess],
) -> None:
    server = _policy_server(server_factory)
    with server.client() as api:
        instance_id = create(api)["id"]
        wait_for_status(api, instance_id, "RUNNING")
        [before] = ok(api.get(f"/{instance_id}/stops"))["stops"]
        extended = ok(api.post(f"/{instance_id}/extend", json={"seconds": 6}))
        assert extended["stops"][0]["at"] == before["at"] + 6000
        assert extended["extended_seconds"] == 6
        assert extended["extension_left_seconds"] == EXTENSION_S - 6

        body = assert_error(api.post(f"/{instance_id}/extend", json={"seconds": 5}),
                            "ModelArts.6349")
        assert body["error_message"] == (
            f"This run can be extended by at most {EXTENSION_S - 6} more seconds "
            f"(the operator allows {EXTENSION_S} seconds per run)."
        )
        assert ok(api.get(f"/{instance_id}/stops")) == extended  # the refusal changed nothing

        [event] = [e for e in _events(api, instance_id) if e["kind"] == "extended"]
        assert event["actor"] == "user:admin"
        assert event["detail"] == {"seconds": 6, "total_s": 6}

        # The CLI says the same, and refuses as the API does.
        shown = _cli(server, "stops", instance_id)
        assert shown.returncode == 0, shown.stderr
        assert "max_lifetime" in shown.stdout and f"{EXTENSION_S - 6}s more allowed" in shown.stderr
        past = _cli(server, "extend", instance_id, str(EXTENSION_S))
        assert past.returncode != 0
        assert f"at most {EXTENSION_S - 6} more seconds" in past.stderr

        # It runs past the first deadline, and stops at the extended one.
        while time.time() * 1000 < before["at"] + 1500:
            time.sleep(0.2)
        assert ok(api.get(f"/{instance_id}"))["status"] == "RUNNING"
        wait_for_status(api, instance_id, "STOPPED", timeout=30)
        stopped = _events(api, instance_id)[-1]
        assert stopped["at"] >= before["at"] + 6000

        # A new run starts without its extension.
        ok(api.post(f"/{instance_id}/action", json={"action": "start"}))
        wait_for_status(api, instance_id, "RUNNING")
        fresh = ok(api.get(f"/{instance_id}/stops"))
        assert fresh["extended_seconds"] == 0
        assert fresh["extension_left_seconds"] == EXTENSION_S


def test_bad_extension_requests_get_the_contracts_errors(
    server: ServerProcess, api: httpx.Client, project: str
) -> None:
    instance_id = create(api)["id"]
    wait_for_status(api, instance_id, "RUNNING")
    cases: list[tuple[Any, str]] = [
        ([], "ModelArts.6400"),
        ({}, "ModelArts.6335"),
        ({"seconds": None}, "ModelArts.6335"),
        ({"seconds": "60"}, "ModelArts.6332"),
        ({"seconds": True}, "ModelArts.6332"),
        ({"seconds": 1.5}, "ModelArts.6332"),
        ({"seconds": 0}, "ModelArts.6336"),
        ({"seconds": 10**20}, "ModelArts.6336"),
        ({"seconds": 60, "until": 1}, "ModelArts.6336"),
    ]
    for body, code in cases:
        assert_error(api.post(f"/{instance_id}/extend", json=body), code)
    assert_error(api.post(f"/{instance_id}/extend", content=b"{"), "ModelArts.6400")
    # This server has no policy and the instance no auto-stop: nothing to postpone.
    body = assert_error(api.post(f"/{instance_id}/extend", json={"seconds": 60}),
                        "ModelArts.6357")
    assert "Nothing is going to stop the instance" in body["error_message"]
    assert_error(api.post("/DE-nothing-here/extend", json={"seconds": 60}),
                 "ModelArts.6309")

    # Another member cannot extend, nor even see, someone else's instance.
    other = server.make_token(project, "someone-else")
    with server.client(token=other, project=project) as stranger:
        assert_error(stranger.post(f"/{instance_id}/extend", json={"seconds": 60}),
                     "ModelArts.6309")
        assert_error(stranger.get(f"/{instance_id}/stops"), "ModelArts.6309")

    ok(api.post(f"/{instance_id}/action", json={"action": "stop"}))
    wait_for_status(api, instance_id, "STOPPED")
    body = assert_error(api.post(f"/{instance_id}/extend", json={"seconds": 60}),
                        "ModelArts.6327")
    assert "STOPPED" in body["error_message"]
    assert not any(e["kind"] == "extended" for e in _events(api, instance_id))
    wait_until(lambda: ok(api.get(f"/{instance_id}/stops"))["stops"] == [], "no stops")
