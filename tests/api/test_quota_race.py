"""Quotas hold with two API replicas on one database: racing creates never pass them.

The store takes each quota with one conditional UPDATE of a counter row, in the same
transaction as the insert (``store/instances.py``); this drives two real servers at
once, on SQLite or, in CI's second run, on PostgreSQL.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.api.helpers import build, listing
from tests.conftest import client_for
from tests.server import ServerProcess, wait_for_status

QUOTA = 4
ATTEMPTS = 48


def test_two_replicas_never_pass_the_project_quota(
    server_factory: Callable[..., ServerProcess],
) -> None:
    env = {"DEMANAGER_INSTANCE_QUOTA": str(QUOTA), "DEMANAGER_SECRET_KEY": uuid.uuid4().hex}
    first = server_factory(env=env)
    shared = first.database.url or f"sqlite+aiosqlite:///{first.data_dir / 'demanager.db'}"
    second = server_factory(env={**env, "DEMANAGER_DATABASE_URL": shared})
    project = uuid.uuid4().hex
    clients = [client_for(s, project=project) for s in (first, second)]

    def attempt(n: int) -> httpx.Response:
        return clients[n % 2].post("", json=build(name=f"race-{n}"))

    try:
        with ThreadPoolExecutor(24) as pool:
            answers = list(pool.map(attempt, range(ATTEMPTS)))
        codes = sorted(
            "ok" if r.status_code == 200 else r.json()["error_code"] for r in answers
        )
        assert codes == ["ModelArts.6302"] * (ATTEMPTS - QUOTA) + ["ok"] * QUOTA
        assert listing(clients[0], show_self="false")["total_count"] == QUOTA
        # Deleting one frees exactly one place, on either replica.
        victim = next(r.json()["id"] for r in answers if r.status_code == 200)
        wait_for_status(clients[1], victim, "RUNNING")
        assert clients[1].post(f"/{victim}/action", json={"action": "stop"}).status_code == 200
        wait_for_status(clients[1], victim, "STOPPED")
        assert clients[1].delete(f"/{victim}").status_code == 200
        again = [clients[n % 2].post("", json=build(name=f"again-{n}")) for n in range(2)]
        assert [r.status_code for r in again] == [200, 400]
        assert again[1].json()["error_code"] == "ModelArts.6302"
    finally:
        for c in clients:
            c.close()
