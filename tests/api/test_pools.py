"""Against a real server: pools from the catalog and from ``demanager pools``, changed
while the server runs; create's pool checks (6336, 6355) and the list's ``pool_id``."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.api.helpers import ok
from tests.server import ServerProcess, wait_for_status, wait_until

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
pools:
  - id: file-pool
    name: From the file
"""


def _body(name: str, pool: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, "profile_id": PROFILE, "flavor": FREE,
                            "spec": {"storage": {"type": "evs"}}}
    if pool is not None:
        body["pool"] = {"id": pool}
    return body


def _code(response: httpx.Response) -> str:
    return str(response.json().get("error_code", response.status_code))


def _listed(api: httpx.Client, pool_id: str) -> dict[str, Any]:
    return dict(ok(api.get("", params={"de_type": "Notebook", "pool_id": pool_id})))


def _pools(server: ServerProcess, *args: str) -> str:
    done = server.cli("pools", *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_pools_set_with_the_cli_apply_while_the_server_runs(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(CATALOG, encoding="utf-8")
    server = server_factory(env={"DEMANAGER_CATALOG_FILE": str(catalog),
                                 "DEMANAGER_POOLS_REFRESH_SECONDS": "0.2"})
    with server.client() as api:
        unknown = api.post("", json=_body("unknown", "lab"))
        assert (unknown.status_code, _code(unknown)) == (400, "ModelArts.6336")

        _pools(server, "set", "lab", "--name", "Lab", "--not-ready")
        wait_until(lambda: _code(api.post("", json=_body("early", "lab"))) == "ModelArts.6355",
                   "the new pool is known and not ready")

        _pools(server, "set", "lab", "--ready", "--capacity", f"{FREE}=1")
        wait_until(lambda: api.post("", json=_body("in-lab", "lab")).status_code == 200,
                   "the pool is ready")
        in_lab = _listed(api, "lab")["instances"]
        assert [i["name"] for i in in_lab] == ["in-lab"]
        assert in_lab[0]["pool"] == {"id": "lab", "name": "Lab", "type": "USER_DEFINED",
                                     "owner": {"project_id": server.project}}
        wait_for_status(api, in_lab[0]["id"], "RUNNING")
        # The pool's capacity of one is taken: the next create there queues.
        assert ok(api.post("", json=_body("waits", "lab")))["status"] == "CREATE_QUEUING"
        shared = ok(api.post("", json=_body("shared")))
        file_pool = ok(api.post("", json=_body("in-file-pool", "file-pool")))
        assert shared["status"] == file_pool["status"] == "CREATING"

        listed = _listed(api, "lab")
        assert sorted(i["name"] for i in listed["instances"]) == ["in-lab", "waits"]
        assert listed["total_count"] == 2
        assert [i["name"] for i in _listed(api, "file-pool")[
            "instances"]] == ["in-file-pool"]
        assert _listed(api, "nowhere")["total_count"] == 0

        # A managed pool replaces the file's: another project's pool is unknown here.
        _pools(server, "set", "file-pool", "--owner-project", uuid.uuid4().hex)
        wait_until(
            lambda: _code(api.post("", json=_body("refused", "file-pool"))) == "ModelArts.6336",
            "the file's pool is another project's")
        listing = _pools(server, "list")
        assert "managed (replaces the catalog's)" in listing and "lab\tLab\tready" in listing

        refused = server.cli("pools", "delete", "lab")
        assert refused.returncode == 1 and "has 2 instance(s)" in refused.stderr
        bad = server.cli("pools", "set", "lab", "--capacity", "no.such.flavor=1")
        assert bad.returncode == 2 and bad.stderr.count("\n") == 1
        assert "no flavor 'no.such.flavor'" in bad.stderr
        _pools(server, "delete", "file-pool")
        wait_until(lambda: api.post("", json=_body("back", "file-pool")).status_code == 200,
                   "the file's pool is in force again")
