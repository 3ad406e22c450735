"""Capacity can never be exceeded: racing starts and creates never pass it.

The store takes a slot of the (pool, flavor) scope with one conditional UPDATE of a
counter row, in the transaction of the status write (``store/instances.py``). These
tests race real servers: one, and two replicas sharing one database (PostgreSQL when
``DEMANAGER_TEST_POSTGRES_URL`` is set, else one SQLite file), and restart one in the
middle of a queue to show that the counters are in the store, not in memory.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.helpers import act, ok, stored_count
from tests.conftest import client_for
from tests.server import ServerProcess, TestDatabase, wait_for_status

PROFILE = "Multi-Engine 1.0 (python3)-cpu"
PAID = "modelarts.vm.cpu.2u"
FREE = "modelarts.vm.cpu.free"
RACERS = 8

CATALOG = f"""
profiles:
  - id: "{PROFILE}"
    flavor_type: CPU
flavors:
  - name: {PAID}
    type: CPU
    params: {{CPU: 2, memory: 8GiB}}
    capacity: 1
  - name: {FREE}
    type: CPU
    promo_type: Free
    params: {{CPU: 1, memory: 4GiB}}
    capacity: 2
"""


def _body(name: str, flavor: str = PAID) -> dict[str, Any]:
    return {"name": name, "profile_id": PROFILE, "flavor": flavor,
            "spec": {"storage": {"type": "evs"}}}


def _outcomes(answers: list[httpx.Response]) -> list[str]:
    return sorted("ok" if r.status_code == 200 else r.json()["error_code"] for r in answers)


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    path = tmp_path / "catalog.yaml"
    path.write_text(CATALOG, encoding="utf-8")
    return path


@pytest.fixture(params=[1, 2], ids=["one-server", "two-replicas"])
def servers(
    request: pytest.FixtureRequest,
    server_factory: Callable[..., ServerProcess],
    catalog: Path,
) -> Iterator[list[ServerProcess]]:
    """One server, or two replicas sharing one database and one secret key."""
    env = {"DEMANAGER_CATALOG_FILE": str(catalog), "DEMANAGER_SECRET_KEY": uuid.uuid4().hex,
           "DEMANAGER_INSTANCE_QUOTA": "100"}
    if request.param == 1:
        yield [server_factory(env=env)]
        return
    database = TestDatabase()
    try:
        first = server_factory(env=env, database=database)
        shared = database.url or f"sqlite+aiosqlite:///{first.data_dir / 'demanager.db'}"
        second = server_factory(env={**env, "DEMANAGER_DATABASE_URL": shared}, database=database)
        yield [first, second]
    finally:
        database.drop()


def test_racing_starts_never_pass_the_capacity(servers: list[ServerProcess]) -> None:
    project = uuid.uuid4().hex
    clients = [client_for(s, project=project) for s in servers]
    try:
        api = clients[0]
        # Capacity 1: make the stopped instances one after another.
        ids = []
        for n in range(RACERS):
            created = ok(api.post("", json=_body(f"start-{n}")))
            wait_for_status(api, created["id"], "RUNNING")
            ok(act(api, created["id"], "stop"))
            wait_for_status(api, created["id"], "STOPPED")
            ids.append(created["id"])

        def start(n: int) -> httpx.Response:
            return act(clients[n % len(clients)], ids[n], "start")

        with ThreadPoolExecutor(RACERS) as pool:
            answers = list(pool.map(start, range(RACERS)))
        assert _outcomes(answers) == ["ModelArts.6360"] * (RACERS - 1) + ["ok"]
        winner = next(i for i, r in zip(ids, answers, strict=True) if r.status_code == 200)
        wait_for_status(api, winner, "RUNNING")
        statuses = {i: ok(api.get(f"/{i}"))["status"] for i in ids}
        assert sorted(statuses.values()) == ["RUNNING"] + ["STOPPED"] * (RACERS - 1)
        assert ok(api.get(f"/{winner}"))["flavor_details"]["status"] == "soldOut"

        # Stopping the winner frees the one slot, for whichever asks first.
        ok(act(api, winner, "stop"))
        wait_for_status(api, winner, "STOPPED")
        loser = next(i for i in ids if i != winner)
        assert ok(act(clients[-1], loser, "start"))["current_status"] == "STARTING"
        wait_for_status(api, loser, "RUNNING")
    finally:
        for c in clients:
            c.close()


def test_racing_creates_from_two_projects_never_pass_the_capacity(
    servers: list[ServerProcess],
) -> None:
    projects = [uuid.uuid4().hex, uuid.uuid4().hex]
    clients = [client_for(s, project=p) for s in servers for p in projects]
    try:

        def create(n: int) -> httpx.Response:
            return clients[n % len(clients)].post("", json=_body(f"create-{n}"))

        with ThreadPoolExecutor(RACERS) as pool:
            answers = list(pool.map(create, range(RACERS)))
        assert _outcomes(answers) == ["ModelArts.6329"] * (RACERS - 1) + ["ok"]
        n, winner = next((n, r.json()) for n, r in enumerate(answers) if r.status_code == 200)
        wait_for_status(clients[n % len(clients)], winner["id"], "RUNNING")
        # A refused create left nothing behind.
        assert sorted(stored_count(c) for c in clients[: len(projects)]) == [0, 1]
    finally:
        for c in clients:
            c.close()


def _queue(api: httpx.Client, ids: list[str]) -> list[tuple[str, int | None]]:
    views = [ok(api.get(f"/{i}")) for i in ids]
    return [(v["status"], (v.get("queuing_info") or {}).get("rank")) for v in views]


def test_a_free_flavor_queues_beyond_its_capacity_across_a_restart(
    server_factory: Callable[..., ServerProcess], catalog: Path
) -> None:
    server = server_factory(env={"DEMANAGER_CATALOG_FILE": str(catalog)})
    with client_for(server) as api:
        with ThreadPoolExecutor(5) as pool:
            answers = list(pool.map(lambda n: api.post("", json=_body(f"q{n}", FREE)), range(5)))
        created = sorted((ok(r) for r in answers), key=lambda b: int(b["creation_timestamp"]))
        running = [b["id"] for b in created if b["status"] == "CREATING"]
        queued = [b["id"] for b in created if b["status"] == "CREATE_QUEUING"]
        assert len(running) == 2 and len(queued) == 3
        for i in running:
            wait_for_status(api, i, "RUNNING")
        ranks = sorted(rank or 0 for _, rank in _queue(api, queued))
        assert ranks == [1, 2, 3]
        queued.sort(key=lambda i: ok(api.get(f"/{i}"))["queuing_info"]["rank"])
        details = ok(api.get(f"/{queued[0]}"))["flavor_details"]
        assert details["status"] == "soldOut" and details["queuing_num"] == 3
        assert details["instance_num"] == 5

        ok(act(api, running[0], "stop"))
        wait_for_status(api, queued[0], "RUNNING")
        assert _queue(api, queued[1:]) == [("CREATE_QUEUING", 1), ("CREATE_QUEUING", 2)]
        assert ok(api.get(f"/{running[0]}"))["status"] == "STOPPED"

        # The counters live in the store: a restarted server still counts 2 slots taken.
        server.stop()
        server.start()
        assert _queue(api, queued[1:]) == [("CREATE_QUEUING", 1), ("CREATE_QUEUING", 2)]
        assert ok(api.get(f"/{queued[1]}"))["flavor_details"]["status"] == "soldOut"
        # A start of the stopped one queues behind them.
        assert ok(act(api, running[0], "start")) == {
            "current_status": "START_QUEUING", "previous_state": "STOPPED"}
        assert ok(api.get(f"/{running[0]}"))["queuing_info"]["rank"] == 3

        ok(act(api, running[1], "stop"))
        wait_for_status(api, queued[1], "RUNNING")
        assert _queue(api, [queued[2], running[0]]) == [
            ("CREATE_QUEUING", 1), ("START_QUEUING", 2)]
        ok(act(api, queued[0], "stop"))
        wait_for_status(api, queued[2], "RUNNING")
        ok(act(api, queued[1], "stop"))
        wait_for_status(api, running[0], "RUNNING")
        statuses = sorted(ok(api.get(f"/{i}"))["status"] for i in running + queued)
        assert statuses == ["RUNNING"] * 2 + ["STOPPED"] * 3


def test_a_dedicated_pool_has_its_own_capacity(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    catalog = tmp_path / "pools.yaml"
    catalog.write_text(
        CATALOG + f"pools:\n  - id: pool-a\n    capacity: {{{PAID}: 2}}\n"
        "  - id: pool-b\n", encoding="utf-8")
    server = server_factory(env={"DEMANAGER_CATALOG_FILE": str(catalog)})
    with client_for(server) as api:
        ok(api.post("", json=_body("shared")))
        in_a = [api.post("", json={**_body(f"a{n}"), "pool": {"id": "pool-a"}}) for n in range(3)]
        assert _outcomes(in_a) == ["ModelArts.6329", "ok", "ok"]
        in_b = [api.post("", json={**_body(f"b{n}"), "pool": {"id": "pool-b"}}) for n in range(3)]
        assert _outcomes(in_b) == ["ok"] * 3  # no entry: unlimited there
        assert api.post("", json=_body("shared-2")).json()["error_code"] == "ModelArts.6329"
        assert ok(api.get(f"/{ok(in_a[0])['id']}"))["flavor_details"]["status"] == "soldOut"
        assert ok(api.get(f"/{ok(in_b[0])['id']}"))["flavor_details"]["status"] == "onSale"
