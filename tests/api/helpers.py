"""Small helpers shared by the API tests: building bodies, asserting errors, counting."""

from __future__ import annotations

import copy
from typing import Any

import httpx

from tests.conftest import MINIMAL_BODY
from tests.server import wait_for_status

DROP = object()
"""A value for ``build`` that removes the key instead of setting it."""

CPU_PROFILE = "Multi-Engine 1.0 (python3)-cpu"
GPU_PROFILE = "Multi-Engine 1.0 (python3)-gpu"
FAILING_PROFILE = "Failing profile"
CPU_FLAVOR = "modelarts.vm.cpu.2u"
FREE_FLAVOR = "modelarts.vm.cpu.free"
FULL_FREE_FLAVOR = "modelarts.vm.cpu.free-full"
"""A free flavor without a single slot: its instances queue and stay queued."""
DEDICATED_POOL = "pool-dedicated"
WORK_DIR = "/home/ma-user/work"

OBS_STORAGE: dict[str, Any] = {"type": "obs", "location": {"path": "/bucket-a/notebooks/"}}
OBSFS_STORAGE: dict[str, Any] = {"type": "obsfs", "location": {"path": "my-pfs"}}


def build(base: dict[str, Any] | None = None, **changes: Any) -> dict[str, Any]:
    """A deep copy of ``base`` (default: the minimal EVS body) with dotted-path changes.

    ``build(**{"spec.storage.type": "obs"})`` sets a nested key (creating objects on the
    way); a value of ``DROP`` removes the key.
    """
    body = copy.deepcopy(MINIMAL_BODY if base is None else base)
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = body
        for key in parents:
            node = node.setdefault(key, {})
        if value is DROP:
            node.pop(last, None)
        else:
            node[last] = copy.deepcopy(value)
    return body


def assert_error(response: httpx.Response, code: str, status: int = 400) -> dict[str, Any]:
    """The contract's error shape (§1.8): exactly the two keys, the code and the status."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error_code", "error_message"}, body
    assert body["error_code"] == code, body
    assert isinstance(body["error_message"], str) and body["error_message"]
    assert response.headers["content-type"] == "application/json; charset=UTF-8"
    return body


def ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json; charset=UTF-8"
    return response.json()


def create(api: httpx.Client, base: dict[str, Any] | None = None, **changes: Any) -> dict[str, Any]:
    """Create an instance and return the response body (asserting success)."""
    body: dict[str, Any] = ok(api.post("", json=build(base, **changes)))
    return body


def listing(api: httpx.Client, **params: Any) -> dict[str, Any]:
    query = {"de_type": "Notebook", **params}
    body: dict[str, Any] = ok(api.get("", params=query))
    return body


WORKSPACES = ("0", "ws-analytics")
"""The workspaces of the test catalog (the built-in catalog has only "0")."""


def stored_count(api: httpx.Client, workspaces: tuple[str, ...] = ("0",),
                 *, tombstones: bool = False) -> int:
    """Instances of the project in ``workspaces`` (a failed create leaves no tombstone, so
    those are counted only on request)."""
    total = 0
    for workspace in workspaces:
        for extra in ({}, {"status": "DELETED"}) if tombstones else ({},):
            query = {"show_self": "false", "workspace_id": workspace, **extra}
            total += int(listing(api, **query)["total_count"])
    return total


def remove(api: httpx.Client, instance_id: str) -> None:
    """Delete an instance whatever it is doing: let it settle, stop it, delete it."""
    view = wait_for_status(api, instance_id, SETTLED)
    if view["status"] == "RUNNING":
        ok(act(api, instance_id, "stop"))
        wait_for_status(api, instance_id, "STOPPED")
    ok(api.delete(f"/{instance_id}"))


SETTLED = {"RUNNING", "STOPPED", "CREATE_FAILED", "START_FAILED"}


def act(api: httpx.Client, instance_id: str, action: str) -> httpx.Response:
    return api.post(f"/{instance_id}/action", json={"action": action})
