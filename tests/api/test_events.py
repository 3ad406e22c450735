"""The event log against a real server (fake backend): the whole history of an
instance, its pages and scopes, live streams, a restart and the purge."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.api.helpers import FULL_FREE_FLAVOR, assert_error, create, ok
from tests.server import ServerProcess, wait_for_status, wait_until

OPERATOR = "user:admin"


def _events_client(server: ServerProcess, project: str) -> httpx.Client:
    return httpx.Client(
        base_url=f"{server.url}/v1/{project}/demanager",
        headers={"X-Auth-Token": server.token},
        timeout=30.0,
    )


def _kinds(events: list[dict[str, Any]]) -> list[str]:
    return [e["kind"] for e in events]


def _act(api: httpx.Client, instance_id: str, action: str) -> None:
    ok(api.post(f"/{instance_id}/action", json={"action": action}))


def test_the_whole_life_of_an_instance_in_order(
    server: ServerProcess, api: httpx.Client, project: str
) -> None:
    instance_id = create(api)["id"]
    wait_for_status(api, instance_id, "RUNNING")
    _act(api, instance_id, "stop")
    wait_for_status(api, instance_id, "STOPPED")
    _act(api, instance_id, "start")
    wait_for_status(api, instance_id, "RUNNING")
    _act(api, instance_id, "stop")
    wait_for_status(api, instance_id, "STOPPED")
    ok(api.delete(f"/{instance_id}"))
    with _events_client(server, project) as log:
        body = ok(log.get(f"/instances/{instance_id}/events"))
    events = body["events"]
    assert body["total"] == len(events)
    assert [(e["kind"], e["actor"]) for e in events] == [
        ("created", OPERATOR),
        ("launched", "engine"),
        ("ready", "engine"),
        ("stop_requested", OPERATOR),
        ("stopped", OPERATOR),
        ("start_requested", OPERATOR),
        ("launched", "engine"),
        ("ready", "engine"),
        ("stop_requested", OPERATOR),
        ("stopped", OPERATOR),
        ("deleted", OPERATOR),
    ]
    ids = [e["id"] for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    ats = [e["at"] for e in events]
    assert ats == sorted(ats)
    assert {e["instance_id"] for e in events} == {instance_id}
    assert {e["project_id"] for e in events} == {project}
    assert all(isinstance(e["message"], str) and e["message"] for e in events)
    assert events[2]["detail"]["start_ms"] >= 0


def test_a_failure_names_its_event(server: ServerProcess, api: httpx.Client, project: str) -> None:
    instance_id = create(api, profile_id="Failing profile")["id"]
    failed = wait_for_status(api, instance_id, {"CREATE_FAILED", "RUNNING"})
    assert failed["status"] == "CREATE_FAILED"
    reasons = failed["spec"]["failed_reasons"]
    with _events_client(server, project) as log:
        events = ok(log.get(f"/instances/{instance_id}/events"))["events"]
    explaining = [e for e in events if str(e["id"]) == reasons["detail"]["event_id"]]
    assert len(explaining) == 1
    assert explaining[0]["kind"] == "failed"
    assert explaining[0]["code"] == reasons["code"] == failed["error_code"]
    assert all(isinstance(v, str) for v in reasons["detail"].values())


def test_pages_and_bad_paging(server: ServerProcess, api: httpx.Client, project: str) -> None:
    ids = [create(api, name=f"nb{n}")["id"] for n in range(3)]
    with _events_client(server, project) as log:
        wait_until(
            lambda: ok(log.get("/events", params={"limit": 1000}))["total"] >= 9,
            "three instances created and running",
        )
        everything = ok(log.get("/events", params={"limit": 1000}))["events"]
        page = ok(log.get("/events", params={"limit": 2, "offset": 1}))
        assert page["events"] == everything[1:3]
        after = ok(log.get("/events", params={"after": everything[3]["id"], "limit": 1000}))
        assert after["events"] == everything[4:]
        assert after["total"] == len(everything) - 4
        mine = ok(log.get(f"/instances/{ids[0]}/events"))["events"]
        assert mine and {e["instance_id"] for e in mine} == {ids[0]}
        for params in ({"limit": 0}, {"limit": 1001}, {"limit": "x"}, {"offset": -1},
                       {"offset": "1e3"}, {"after": " 1"}, {"limit": ""}):
            assert_error(log.get("/events", params=params), "ModelArts.6336")
            assert_error(log.get(f"/instances/{ids[0]}/events", params=params),
                         "ModelArts.6336")
        assert_error(log.get("/instances/DE-none/events"), "ModelArts.6309")


def test_another_projects_events_are_invisible(
    server: ServerProcess, api: httpx.Client, project: str
) -> None:
    instance_id = create(api)["id"]
    with _events_client(server, project + "x") as other:
        assert ok(other.get("/events"))["total"] == 0
        assert_error(other.get(f"/instances/{instance_id}/events"), "ModelArts.6309")
        assert_error(other.get(f"/instances/{instance_id}/events/stream"), "ModelArts.6309")


def test_a_member_sees_only_their_own_instances_events(
    server: ServerProcess, api: httpx.Client, project: str
) -> None:
    theirs = create(api)["id"]
    token = server.make_token(project, "bob")
    with httpx.Client(base_url=f"{server.url}/v1/{project}/demanager",
                      headers={"X-Auth-Token": token}, timeout=30.0) as bob:
        mine = ok(bob.post("/instances", json={
            "name": "bobs", "profile_id": "Multi-Engine 1.0 (python3)-cpu",
            "flavor": "modelarts.vm.cpu.2u", "spec": {"storage": {"type": "evs"}},
        }))["id"]
        seen = ok(bob.get("/events", params={"limit": 1000}))["events"]
        assert {e["instance_id"] for e in seen} == {mine}
        assert seen[0]["actor"] == "user:bob"
        assert_error(bob.get(f"/instances/{theirs}/events"), "ModelArts.6309")


# --- live streams -------------------------------------------------------------------


@contextmanager
def _stream(
    server: ServerProcess, path: str, headers: dict[str, str] | None = None
) -> Iterator[queue.Queue[tuple[float, dict[str, Any]]]]:
    """Read server-sent events in a thread: (arrival wall time, event) per event."""
    received: queue.Queue[tuple[float, dict[str, Any]]] = queue.Queue()
    opened = threading.Event()
    stop = threading.Event()
    client = httpx.Client(headers={"X-Auth-Token": server.token, **(headers or {})},
                          timeout=httpx.Timeout(30.0, read=None))

    def read() -> None:
        try:
            listen()
        except httpx.HTTPError:
            if not stop.is_set():  # closing the client below ends the read this way
                raise

    def listen() -> None:
        with client.stream("GET", f"{server.url}{path}") as response:
            assert response.status_code == 200, response.read()
            assert response.headers["content-type"].startswith("text/event-stream")
            event_id = None
            for line in response.iter_lines():
                if stop.is_set():
                    return
                if line.startswith(": open"):
                    opened.set()
                elif line.startswith("id: "):
                    event_id = int(line[4:])
                elif line.startswith("data: "):
                    event = json.loads(line[6:])
                    assert event["id"] == event_id
                    received.put((time.time(), event))

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    assert opened.wait(10), "the stream never opened"
    try:
        yield received
    finally:
        stop.set()
        client.close()
        thread.join(5)


def _take(received: queue.Queue[tuple[float, dict[str, Any]]], until: Callable[
        [dict[str, Any]], bool], timeout: float = 60.0) -> list[tuple[float, dict[str, Any]]]:
    taken = []
    deadline = time.monotonic() + timeout
    while True:
        item = received.get(timeout=max(0.01, deadline - time.monotonic()))
        taken.append(item)
        if until(item[1]):
            return taken


def test_a_stream_sees_each_event_within_200_ms(
    server: ServerProcess, api: httpx.Client, project: str
) -> None:
    with _stream(server, f"/v1/{project}/demanager/events/stream") as received:
        instance_id = create(api)["id"]
        got = _take(received, lambda e: e["kind"] == "ready")
        _act(api, instance_id, "stop")
        got += _take(received, lambda e: e["kind"] == "stopped")
    kinds = [e["kind"] for _, e in got]
    assert kinds == ["created", "launched", "ready", "stop_requested", "stopped"]
    # From the write's own time (the server's clock: the same host) to arrival here.
    late = [(e["kind"], round(arrived - e["at"] / 1000, 3)) for arrived, e in got]
    print("from the write to the stream's client, s:", late)  # shown with -s
    assert all(seconds < 0.2 for _, seconds in late), late


def test_a_stream_resumes_after_the_last_event_id(
    server: ServerProcess, api: httpx.Client, project: str
) -> None:
    instance_id = create(api)["id"]
    wait_for_status(api, instance_id, "RUNNING")
    with _events_client(server, project) as log:
        events = ok(log.get(f"/instances/{instance_id}/events"))["events"]
    path = f"/v1/{project}/demanager/instances/{instance_id}/events/stream"
    with _stream(server, path, {"Last-Event-ID": str(events[0]["id"])}) as received:
        got = _take(received, lambda e: e["kind"] == "ready", timeout=10)
    assert [e for _, e in got] == events[1:]
    with _events_client(server, project) as log:
        assert_error(log.get(f"/instances/{instance_id}/events/stream",
                             headers={"Last-Event-ID": "x"}), "ModelArts.6336")


# --- restart and retention ----------------------------------------------------------


def test_events_survive_a_restart_and_go_after_their_retention(
    server_factory: Callable[..., ServerProcess],
) -> None:
    proc = server_factory(backend="fake")
    project = proc.project
    with proc.client() as api:
        instance_id = create(api)["id"]
        wait_for_status(api, instance_id, "RUNNING")
        _act(api, instance_id, "stop")
        wait_for_status(api, instance_id, "STOPPED")
        ok(api.delete(f"/{instance_id}"))
    with _events_client(proc, project) as log:
        before = ok(log.get("/events"))["events"]
    assert _kinds(before) == [
        "created", "launched", "ready", "stop_requested", "stopped", "deleted"
    ]
    proc.stop()
    proc.start()
    with _events_client(proc, project) as log:
        assert ok(log.get("/events"))["events"] == before
        # A deleted instance's log outlives it.
        assert ok(log.get(f"/instances/{instance_id}/events"))["events"] == before
    proc.stop()
    time.sleep(1.1)  # older than the retention below, whatever the restart takes
    proc.env["DEMANAGER_EVENT_RETENTION_SECONDS"] = "1"
    proc.start()
    with _events_client(proc, project) as log:
        wait_until(lambda: ok(log.get("/events"))["total"] == 0, "the events purged")


def test_a_restarted_server_adopts_what_still_runs(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    # Workloads in a shared state directory outlive the server, as real ones do.
    proc = server_factory(backend="fake", env={"DEMANAGER_FAKE__STATE_DIR": str(tmp_path)})
    with proc.client() as api:
        instance_id = create(api)["id"]
        wait_for_status(api, instance_id, "RUNNING")
    proc.stop()
    proc.start()
    with _events_client(proc, proc.project) as log:
        wait_until(
            lambda: "adopted" in _kinds(ok(log.get(f"/instances/{instance_id}/events"))["events"]),
            "the running instance adopted",
        )
        kinds = _kinds(ok(log.get(f"/instances/{instance_id}/events"))["events"])
    assert kinds == ["created", "launched", "ready", "adopted"]


def test_a_queue_says_each_ones_rank_and_a_dequeue_who_stopped_it(
    server: ServerProcess, api: httpx.Client, project: str
) -> None:
    first, second = (create(api, name=f"q{n}", flavor=FULL_FREE_FLAVOR)["id"] for n in (1, 2))
    _act(api, second, "dequeue")
    with _events_client(server, project) as log:
        one = ok(log.get(f"/instances/{first}/events"))["events"]
        two = ok(log.get(f"/instances/{second}/events"))["events"]
    # The flavor's queue is shared with other tests' projects on this server: the two
    # ranks follow each other, wherever the queue stood.
    assert [e["kind"] for e in one] == ["created", "queued"]
    assert one[0]["detail"] == {"flavor": FULL_FREE_FLAVOR}
    rank = one[1]["detail"]["rank"]
    assert rank >= 1
    assert [(e["kind"], e["actor"]) for e in two] == [
        ("created", OPERATOR), ("queued", OPERATOR), ("stopped", OPERATOR)
    ]
    assert two[1]["detail"] == {"rank": rank + 1}
    assert two[2]["detail"] == {"reason": "dequeue"}


def test_an_auto_stop_is_the_policys_doing(
    server: ServerProcess, api: httpx.Client, project: str
) -> None:
    instance_id = create(api, **{"spec.auto_stop": {"enable": True, "duration": 1}})["id"]
    wait_for_status(api, instance_id, "RUNNING")
    wait_for_status(api, instance_id, "STOPPED", timeout=30)
    with _events_client(server, project) as log:
        events = ok(log.get(f"/instances/{instance_id}/events"))["events"]
    assert [(e["kind"], e["actor"]) for e in events[-2:]] == [
        ("stop_requested", "policy:auto_stop"), ("stopped", "policy:auto_stop")
    ]
    assert "auto-stop" in events[-1]["message"]
