"""Wire samples and an in-memory stand-in for the API, for SDK and CLI unit tests.

The stand-in answers through ``httpx.MockTransport``; it implements just
enough of the contract (paths, status changes, error bodies) to exercise the
client side. The real server is exercised by tests/api and tests/e2e.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from demanager.client import AsyncClient, Client

PROJECT = "0f2a9c6e5d4b4a3f9e8d7c6b5a4f3e2d"
TOKEN = "tok-1"
ME = {"id": "9d3c1b7a5e8f4c2a8b6d0e4f1a3c5b7d", "name": "alice"}
SOMEONE_ELSE = {"id": "15dda26361214ca2a5953917d2f48ffb", "name": "bob"}

PROFILE: dict[str, Any] = {
    "id": "Multi-Engine 1.0 (python3)-cpu",
    "name": "Multi-Engine 1.0 (python3)-cpu",
    "description": "multi engine, cpu",
    "de_type": "Notebook",
    "flavor_type": "CPU",
    "provision": {
        "type": "Docker",
        "spec": {
            "engine": "CCE",
            "params": {
                "namespace": "atelier",
                "image_name": "mul-kernel-cpu-cp36",
                "image_tag": "2.0.5-B003",
                "annotations": None,
            },
        },
    },
}
FLAVOR: dict[str, Any] = {
    "name": "modelarts.vm.cpu.2u",
    "status": "onSale",
    "type": "CPU",
    "params": {"CPU": 2, "GPU": 0, "memory": "8GiB"},
    "promo_type": "NoDiscount",
    "storage_list": ["obs", "evs"],
}


def wire_instance(number: int = 1, status: str = "RUNNING", **changes: Any) -> dict[str, Any]:
    """A complete Instance body shaped like the contract's §9 sample."""
    body: dict[str, Any] = {
        "id": f"DE-00000000-0000-1000-8000-{number:012d}",
        "name": f"nb-{number:04d}",
        "description": "",
        "status": status,
        "creation_timestamp": str(1732694400000 + number),
        "latest_update_timestamp": str(1732694400000 + number),
        "profile": PROFILE,
        "flavor": FLAVOR["name"],
        "flavor_details": {k: FLAVOR[k] for k in ("name", "status", "type", "params")},
        "spec": {
            "annotations": {"target_domain": "http://dm.test", "url": ""},
            "auto_stop": {"enable": False, "prompt": True},
            "storage": {
                "type": "evs",
                "location": {"path": "/home/ma-user/work", "volume_size": 5, "volume_unit": "GB"},
            },
            "extend_storage": None,
            "failed_reasons": None,
            "extend_params": None,
            "repository": None,
        },
        "workspace": {"id": "0"},
        "ai_project": {"id": "default-ai-project"},
        "user": ME,
    }
    body.update(changes)
    return body


def error(status: int, code: str, message: str) -> httpx.Response:
    return httpx.Response(
        status, json={"error_code": f"ModelArts.{code}", "error_message": message}
    )


def not_found(instance_id: str) -> httpx.Response:
    return error(400, "6309", f"The instance {instance_id} does not exist.")


#: Where an accepted action leads next: (immediate status, then what GETs show).
_ACTIONS: dict[tuple[str, str], tuple[str, list[str]]] = {
    ("start", "STOPPED"): ("STARTING", ["RUNNING"]),
    ("stop", "RUNNING"): ("STOPPING", ["STOPPED"]),
    ("restart", "RUNNING"): ("RESTARTING", ["RUNNING"]),
}


class FakeApi:
    """A stateful MockTransport handler for one project.

    ``script[id]`` lists the statuses successive GETs of that instance will
    report (the engine's progress); ``after_create`` is the script a new
    instance gets.
    """

    def __init__(self) -> None:
        self.instances: dict[str, dict[str, Any]] = {}
        self.script: dict[str, list[str]] = {}
        self.after_create: list[str] = ["CREATING", "RUNNING"]
        self.requests: list[httpx.Request] = []
        self.events: dict[str, list[dict[str, Any]]] = {}
        """Each instance's event log; its stream sends what follows ``Last-Event-ID``
        and then ends (the client reconnects), or raises ``stream_error`` if set."""
        self.stream_error: BaseException | None = None
        self._serial = 0
        self._event_serial = 0

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)

    def add(self, status: str = "RUNNING", **changes: Any) -> dict[str, Any]:
        self._serial += 1
        body = wire_instance(self._serial, status, **changes)
        self._set_url(body)
        self.instances[body["id"]] = body
        return body

    def log(self, instance_id: str, kind: str, message: str, **detail: Any) -> dict[str, Any]:
        """Append an event to the instance's log, as the server's engine would."""
        self._event_serial += 1
        event = {
            "id": self._event_serial,
            "instance_id": instance_id,
            "project_id": PROJECT,
            "at": 1732694400000 + 100 * self._event_serial,
            "kind": kind,
            "actor": "engine",
            "message": message,
            "code": None,
            "detail": detail,
        }
        self.events.setdefault(instance_id, []).append(event)
        return event

    def streams(self) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.path.endswith("/events/stream")]

    def bodies(self, method: str) -> list[Any]:
        return [json.loads(r.content) for r in self.requests if r.method == method]

    def _set_url(self, body: dict[str, Any]) -> None:
        running = body["status"] == "RUNNING"
        body["spec"]["annotations"]["url"] = (
            f"http://dm.test/notebooks/{body['id']}/" if running else ""
        )

    def _advance(self, instance_id: str) -> None:
        steps = self.script.get(instance_id)
        if steps:
            self.instances[instance_id]["status"] = steps.pop(0)
            self._set_url(self.instances[instance_id])

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.headers.get("X-Auth-Token") != TOKEN:
            return error(401, "6620", "The user token is invalid.")
        parts = request.url.path.strip("/").split("/")
        if parts[:1] != ["v1"] or len(parts) < 4 or parts[2] != "demanager":
            return error(404, "2836", "path not found")
        if parts[1] != PROJECT:
            return error(403, "0210", "project mismatch")
        rest, method = parts[3:], request.method
        if rest == ["profiles"]:
            return httpx.Response(200, json={"profiles": [PROFILE]})
        if rest == ["flavors"]:
            return httpx.Response(200, json={"flavors": [FLAVOR]})
        if rest == ["instances"] and method == "GET":
            return self._list(request)
        if rest == ["instances"] and method == "POST":
            return self._create(json.loads(request.content))
        if len(rest) >= 2 and rest[0] == "instances":
            return self._one(rest[1], rest[2:], request)
        return error(404, "2836", "path not found")

    def _list(self, request: httpx.Request) -> httpx.Response:
        params = request.url.params
        found = list(self.instances.values())
        if params.get("show_self", "true") == "true":
            found = [i for i in found if i["user"]["id"] == ME["id"]]
        if "status" in params:
            found = [i for i in found if i["status"] == params["status"]]
        key = params.get("sortby", "name")
        found.sort(key=lambda i: i[key], reverse=params.get("order") == "desc")
        offset, limit = int(params.get("offset", "0")), int(params.get("limit", "0"))
        page = found[offset : offset + limit] if limit else found[offset:]
        return httpx.Response(200, json={"total_count": len(found), "instances": page})

    def _create(self, body: dict[str, Any]) -> httpx.Response:
        if any(i["name"] == body["name"] for i in self.instances.values()):
            return error(400, "6301", "The instance already exists.")
        spec = body["spec"]
        auto_stop = spec.get("auto_stop") or {}
        created = self.add(
            "CREATING",
            name=body["name"],
            description=body.get("description", ""),
        )
        created["spec"]["auto_stop"] = {
            "enable": bool(auto_stop.get("enable")),
            "prompt": True,
            **({"duration": auto_stop["duration"]} if "duration" in auto_stop else {}),
        }
        created["spec"]["annotations"].update(spec.get("annotations") or {})
        self.script[created["id"]] = list(self.after_create)
        return httpx.Response(200, json=created)

    def _one(self, instance_id: str, tail: list[str], request: httpx.Request) -> httpx.Response:
        instance = self.instances.get(instance_id)
        if instance is None:
            return not_found(instance_id)
        method = request.method
        if tail == ["action"] and method == "POST":
            action = json.loads(request.content)["action"]
            move = _ACTIONS.get((action, instance["status"]))
            if move is None:
                return error(400, "6357", "Operation not allowed.")
            previous = instance["status"]
            instance["status"], self.script[instance_id] = move[0], list(move[1])
            self._set_url(instance)
            return httpx.Response(
                200, json={"current_status": instance["status"], "previous_state": previous}
            )
        if tail == ["events"] and method == "GET":
            return self._events(instance_id, request)
        if tail == ["events", "stream"] and method == "GET":
            return self._stream(instance_id, request)
        if tail == ["token"]:
            return httpx.Response(200, json={"token": "3f9a0c1e"})
        if tail == ["signed-url"] and method == "POST":
            url = f"http://dm.test/notebooks/{instance_id}/lab?token=dmg_signed"
            return httpx.Response(200, json={"url": url, "expires_at": 1_700_000_300_000})
        if method == "GET":
            self._advance(instance_id)
            return httpx.Response(200, json=instance)
        if method == "PUT":
            change = json.loads(request.content)
            if "description" in change:
                instance["description"] = change["description"]
            auto_stop = change.get("spec", {}).get("auto_stop")
            if auto_stop is not None:
                instance["spec"]["auto_stop"].update(auto_stop)
            return httpx.Response(200, json=instance)
        if method == "DELETE":
            if instance["status"] in {"RUNNING", "RESTARTING"}:
                return error(400, "6304", "Stop the instance before deleting it.")
            del self.instances[instance_id]
            return httpx.Response(200, json={"instance_id": instance_id})
        return error(405, "2803", "method not allowed")

    def _events(self, instance_id: str, request: httpx.Request) -> httpx.Response:
        params = request.url.params
        after = int(params.get("after", "0"))
        found = [e for e in self.events.get(instance_id, []) if e["id"] > after]
        offset, limit = int(params.get("offset", "0")), int(params.get("limit", "100"))
        return httpx.Response(
            200, json={"total": len(found), "events": found[offset : offset + limit]}
        )

    def _stream(self, instance_id: str, request: httpx.Request) -> httpx.Response:
        if self.stream_error is not None:
            raise self.stream_error
        after = int(request.headers.get("Last-Event-ID", request.url.params.get("after", "0")))
        frames = ["retry: 1\n: open\n\n"] + [
            f"id: {e['id']}\ndata: {json.dumps(e)}\n\n"
            for e in self.events.get(instance_id, [])
            if e["id"] > after
        ]
        return httpx.Response(
            200, headers={"Content-Type": "text/event-stream"}, text="".join(frames)
        )


def mock_client(answer: Callable[[httpx.Request], httpx.Response]) -> Client:
    """A ``Client`` whose every request is answered by ``answer``."""
    return Client(
        "http://dm.test", project=PROJECT, token="t", transport=httpx.MockTransport(answer)
    )


def mock_async_client(
    answer: Callable[[httpx.Request], Awaitable[httpx.Response]],
) -> AsyncClient:
    """An ``AsyncClient`` whose every request is answered by ``answer``."""
    return AsyncClient(
        "http://dm.test", project=PROJECT, token="t", transport=httpx.MockTransport(answer)
    )
