"""The read path stays consistent while it is fast: every write is seen by the very next
GET and list, on SQLite and PostgreSQL, with readers hammering the same instances, and
a token the server remembers as valid stops at the next request once revoked."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.helpers import assert_error, create, listing, ok
from tests.conftest import client_for
from tests.server import ServerProcess, wait_for_status

STORES = ["sqlite", "postgresql"]


@pytest.fixture(params=STORES)
def store_server(request: pytest.FixtureRequest, tmp_path: Path,
                 monkeypatch: pytest.MonkeyPatch) -> Iterator[ServerProcess]:
    """A server on each store: PostgreSQL when ``DEMANAGER_TEST_POSTGRES_URL`` names one."""
    if request.param == "sqlite":
        monkeypatch.delenv("DEMANAGER_TEST_POSTGRES_URL", raising=False)
    elif not os.environ.get("DEMANAGER_TEST_POSTGRES_URL"):
        pytest.skip("set DEMANAGER_TEST_POSTGRES_URL to run on PostgreSQL")
    proc = ServerProcess(tmp_path / request.param, backend="fake",
                         env={"DEMANAGER_RATE_LIMIT_PER_SECOND": "0"})
    proc.start()
    yield proc
    proc.close()


class Readers:
    """Threads that GET one instance and list the project without pause, each recording
    the descriptions it saw in order (``v<n>``: they may only go up)."""

    def __init__(self, server: ServerProcess, project: str, token: str, instance_id: str,
                 count: int = 4) -> None:
        self._stop = threading.Event()
        self.seen: list[list[int]] = [[] for _ in range(count)]
        self.failures: list[str] = []
        self._threads = [
            threading.Thread(target=self._read, args=(server, project, token, instance_id, n))
            for n in range(count)
        ]

    def _read(self, server: ServerProcess, project: str, token: str, instance_id: str,
              n: int) -> None:
        with client_for(server, project=project, token=token) as api:
            while not self._stop.is_set():
                one = api.get(f"/{instance_id}")
                page = api.get("", params={"de_type": "Notebook", "limit": 200})
                if one.status_code != 200 or page.status_code != 200:
                    self.failures.append(f"{one.status_code} {page.status_code}")
                    return
                listed = {i["id"]: i for i in page.json()["instances"]}[instance_id]
                for description in (one.json()["description"], listed["description"]):
                    if description.startswith("v"):
                        self.seen[n].append(int(description[1:]))

    def __enter__(self) -> Readers:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)


def both_views(api: httpx.Client, instance_id: str) -> list[dict[str, Any]]:
    """The instance as GET one and as the list show it, asked right away."""
    one = ok(api.get(f"/{instance_id}"))
    listed = [i for i in listing(api, limit=200)["instances"] if i["id"] == instance_id]
    assert len(listed) == 1
    return [one, listed[0]]


def test_every_write_is_seen_by_the_next_read(store_server: ServerProcess) -> None:
    server = store_server
    project = uuid.uuid4().hex
    token = server.make_token(project, "reader-writer")
    with client_for(server, project=project, token=token) as api:
        ids = [create(api, name=f"nb-{n}")["id"] for n in range(3)]
        for instance_id in ids:
            wait_for_status(api, instance_id, "RUNNING")
        watched = ids[0]
        with Readers(server, project, token, watched) as readers:
            for version in range(1, 21):
                written = ok(api.put(f"/{watched}", json={"description": f"v{version}"}))
                for view in both_views(api, watched):
                    assert view["description"] == f"v{version}"
                    assert view["latest_update_timestamp"] == written["latest_update_timestamp"]
            for instance_id in ids:
                ok(api.put(f"/{instance_id}", json={
                    "spec": {"auto_stop": {"enable": True, "duration": 3600}}}))
                for view in both_views(api, instance_id):
                    assert view["spec"]["auto_stop"]["enable"] is True
                    assert view["spec"]["auto_stop"]["duration"] == 3600
                ok(api.put(f"/{instance_id}", json={"spec": {"auto_stop": {"enable": False}}}))
                for view in both_views(api, instance_id):
                    assert view["spec"]["auto_stop"]["enable"] is False
                    assert "stop_timestamp" not in view["spec"]["auto_stop"]
            for instance_id in ids[1:]:
                answer = ok(api.post(f"/{instance_id}/action", json={"action": "stop"}))
                for view in both_views(api, instance_id):
                    assert view["status"] in {answer["current_status"], "STOPPED"}
                wait_for_status(api, instance_id, "STOPPED")
                assert ok(api.delete(f"/{instance_id}")) == {"instance_id": instance_id}
                assert_error(api.get(f"/{instance_id}"), "ModelArts.6309")
                page = listing(api, limit=200)
                assert instance_id not in {i["id"] for i in page["instances"]}
                tombstones = listing(api, status="DELETED")["instances"]
                assert instance_id in {i["id"] for i in tombstones}
        assert not readers.failures
        for seen in readers.seen:
            assert seen == sorted(seen), "a reader saw an older description after a newer one"
        assert any(readers.seen), "the readers read nothing"


def test_a_remembered_token_stops_at_the_next_request_once_revoked(
    server: ServerProcess,
) -> None:
    """Through the server (Keystone ``DELETE /v3/auth/tokens``) and with the operator's
    commands (another process, same data dir), and for a disabled user."""
    project = uuid.uuid4().hex
    tag = uuid.uuid4().hex[:6]
    by_api, by_command, disabled = (server.make_token(project, f"{who}-{tag}")
                                    for who in ("api", "command", "disabled"))
    clients = {t: client_for(server, project=project, token=t)
               for t in (by_api, by_command, disabled)}
    try:
        for client in clients.values():
            for _ in range(3):  # remembered by now
                ok(client.get("", params={"de_type": "Notebook"}))
        revoked = httpx.delete(f"{server.url}/v3/auth/tokens",
                               headers={"X-Auth-Token": by_api, "X-Subject-Token": by_api})
        assert revoked.status_code == 204
        assert_error(clients[by_api].get("", params={"de_type": "Notebook"}),
                     "ModelArts.6620", 401)
        assert server.cli("tokens", "revoke", by_command).returncode == 0
        assert_error(clients[by_command].get("", params={"de_type": "Notebook"}),
                     "ModelArts.6620", 401)
        assert server.cli("users", "disable", f"disabled-{tag}").returncode == 0
        assert_error(clients[disabled].get("", params={"de_type": "Notebook"}),
                     "ModelArts.6608", 401)
    finally:
        for client in clients.values():
            client.close()
