"""The idle policy on real JupyterLab servers: a kernel busy in ``time.sleep(60)`` is not
stopped, an idle server is warned then stopped with its reason, and an extension
within the operator's limit postpones the stop while one past it is refused."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import websocket

from tests.e2e.jupyter import Notebook, _execute_request
from tests.server import ServerProcess, processes_of, wait_for_status, wait_until

pytestmark = pytest.mark.slow

IDLE_S = 12
WARN_S = 6
EXTENSION_S = 30
WEBHOOK_SECRET = "webhook-test-secret"


class Receiver:
    """A webhook endpoint on loopback that keeps what it is sent."""

    def __init__(self) -> None:
        self.posts: list[tuple[dict[str, str], bytes]] = []
        received = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def payloads(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.posts]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    hook = Receiver()
    hook.thread.start()
    yield hook
    hook.server.shutdown()
    hook.server.server_close()


def _create(api: httpx.Client, name: str) -> str:
    body = {
        "name": name,
        "profile_id": "Multi-Engine 1.0 (python3)-cpu",
        "flavor": "modelarts.vm.cpu.2u",
        "spec": {"storage": {"type": "evs"}},
    }
    response = api.post("", json=body)
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def _events(api: httpx.Client, instance_id: str) -> list[dict[str, Any]]:
    response = api.get(f"/{instance_id}/events", params={"limit": 1000})
    assert response.status_code == 200, response.text
    return list(response.json()["events"])


def _kinds(api: httpx.Client, instance_id: str) -> list[str]:
    return [e["kind"] for e in _events(api, instance_id)]


def _sleep_in_a_kernel(notebook: Notebook) -> str:
    """Start ``time.sleep(60)`` in a fresh kernel and disconnect, leaving it busy with no
    connection: only its state can keep the server from being idle."""
    kernel = notebook.http.post("api/kernels", json={"name": "python3"})
    kernel.raise_for_status()
    kernel_id = str(kernel.json()["id"])
    ws = websocket.create_connection(
        f"{notebook.ws_base}api/kernels/{kernel_id}/channels", timeout=60,
        header=[f"X-Auth-Token: {notebook.token}"],
    )
    try:
        msg_id = uuid.uuid4().hex
        ws.send(json.dumps(_execute_request(msg_id, "import time; time.sleep(60)")))
        while True:
            message = json.loads(ws.recv())
            if (
                message["msg_type"] == "status"
                and message.get("parent_header", {}).get("msg_id") == msg_id
                and message["content"]["execution_state"] == "busy"
            ):
                break
    finally:
        ws.close()
    return kernel_id


def test_idle_notebooks_are_warned_then_stopped_and_busy_ones_never(
    server_factory: Callable[..., ServerProcess], receiver: Receiver
) -> None:
    server = server_factory(backend="process", env={
        "DEMANAGER_POLICY__IDLE_TIMEOUT_SECONDS": str(IDLE_S),
        "DEMANAGER_POLICY__WARN_BEFORE_SECONDS": str(WARN_S),
        "DEMANAGER_POLICY__ACTIVITY_PROBE_SECONDS": "1",
        "DEMANAGER_POLICY__MAX_EXTENSION_SECONDS": str(EXTENSION_S),
        "DEMANAGER_POLICY__WEBHOOK_URL": receiver.url,
        "DEMANAGER_POLICY__WEBHOOK_SECRET": WEBHOOK_SECRET,
    })
    with server.client() as api:
        busy, idle, extended = (_create(api, name) for name in ("busy", "idle", "extended"))
        urls = {i: wait_for_status(api, i, "RUNNING", timeout=120)["spec"]["annotations"]["url"]
                for i in (busy, idle, extended)}
        with Notebook(urls[busy], server.token) as notebook:
            kernel_id = _sleep_in_a_kernel(notebook)
            state = notebook.http.get(f"api/kernels/{kernel_id}").json()
            assert state["execution_state"] == "busy" and state["connections"] == 0
        busy_since = time.monotonic()

        # The extended one: once warned, it is extended within the limit, and past it refused.
        wait_until(lambda: "auto_stop_warning" in _kinds(api, extended), "a first warning",
                   timeout=IDLE_S + 30)
        first_warning = next(e for e in _events(api, extended) if e["kind"] == "auto_stop_warning")
        first_stop_at = first_warning["detail"]["stop_at"]
        granted = api.post(f"/{extended}/extend", json={"seconds": 20})
        assert granted.status_code == 200, granted.text
        assert granted.json()["extended_seconds"] == 20
        assert granted.json()["extension_left_seconds"] == EXTENSION_S - 20
        assert granted.json()["idle_timeout_seconds"] == IDLE_S + 20
        refused = api.post(f"/{extended}/extend", json={"seconds": 11})
        assert refused.status_code == 400
        assert refused.json() == {
            "error_code": "ModelArts.6349",
            "error_message": "This run can be extended by at most 10 more seconds "
                             f"(the operator allows {EXTENSION_S} seconds per run).",
        }
        assert _kinds(api, extended).count("extended") == 1  # the refusal changed nothing

        # The idle one: warned ahead, then stopped, the policy named with its reason.
        wait_for_status(api, idle, "STOPPED", timeout=IDLE_S + 60)
        events = _events(api, idle)
        kinds = [e["kind"] for e in events]
        warning = events[kinds.index("auto_stop_warning")]
        request = events[kinds.index("stop_requested")]
        stopped = events[kinds.index("stopped")]
        assert kinds.index("ready") < kinds.index("auto_stop_warning") < kinds.index(
            "stop_requested") < kinds.index("stopped")
        assert warning["actor"] == request["actor"] == stopped["actor"] == "policy:idle"
        assert warning["detail"]["reason"] == "idle"
        assert request["at"] - warning["at"] <= WARN_S * 1000 + 3000
        assert stopped["detail"]["reason"].startswith(f"idle: nothing used it for {IDLE_S} s")
        assert processes_of(idle) == []

        # The warnings went to the webhook too, signed.
        wait_until(lambda: any(p["instance_id"] == idle for p in receiver.payloads()),
                   "the idle one's warning at the webhook")
        for headers, body in receiver.posts:
            expected = hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
            assert headers["x-demanager-signature"] == f"sha256={expected}"
        posted = next(p for p in receiver.payloads() if p["instance_id"] == idle)
        assert posted["kind"] == "auto_stop_warning" and posted["reason"] == "idle"
        assert posted["stop_at"] == warning["detail"]["stop_at"]

        # The extended one outlives its first deadline, then is warned again and stopped.
        while time.time() * 1000 < first_stop_at + 3000:
            time.sleep(0.5)
        assert api.get(f"/{extended}").json()["status"] == "RUNNING"
        wait_for_status(api, extended, "STOPPED", timeout=60)
        kinds = _kinds(api, extended)
        assert kinds.count("auto_stop_warning") == 2
        assert kinds.index("extended") < len(kinds) - 1 - kinds[::-1].index("auto_stop_warning")

        # The busy one: its last activity is as old as the idle one's, and it runs on.
        while time.monotonic() < busy_since + IDLE_S + WARN_S:
            time.sleep(0.5)
        assert api.get(f"/{busy}").json()["status"] == "RUNNING"
        assert "auto_stop_warning" not in _kinds(api, busy)
        stops = api.get(f"/{busy}/stops").json()
        assert stops["stops"] == [] and stops["idle_timeout_seconds"] == IDLE_S

        for instance_id in (busy, idle, extended):
            api.post(f"/{instance_id}/action", json={"action": "stop"})
        for instance_id in (busy, idle, extended):
            wait_for_status(api, instance_id, "STOPPED", timeout=60)
            assert api.delete(f"/{instance_id}").status_code == 200
