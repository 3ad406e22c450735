"""Queues under load: admission latency, queue operations/s, and reading a long queue.

One ``demanager serve`` per store (SQLite, and PostgreSQL when
``DEMANAGER_TEST_POSTGRES_URL`` names an admin URL), the fake backend, and a free
flavor of capacity 1 with a long queue behind its one running instance:

* admission latency: the running instance is stopped; from the moment a poller sees
  it ``STOPPED`` (its slot given back) to the moment another sees the head of the
  queue leave ``CREATE_QUEUING``. The sweep runs only every 30 s, so what is measured
  is the engine being told, not the sweep finding it;
* queue operations/s: ``dequeue`` then ``queue`` of queued instances, one after the
  other, with ``--queued`` (1,000) instances in the queue;
* one GET of a queued instance (its rank and estimate come from the whole queue);
* every rank and estimate of the queue at once: the one read of the flavor's holders,
  queue and recent runs the API makes, then the computation, timed apart.

    .venv/bin/python bench/queue.py [--queued 1000] [--admissions 20] [--operations 200]
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder comes first on the import path, where its own
# name would hide the standard library's ``queue`` (which asyncio, httpx and the
# server's libraries import). The folder holds no module anything imports; Python puts
# it there resolved, as this spells it.
sys.path.remove(str(Path(__file__).resolve().parent))

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import threading
import time

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.server import ServerProcess, wait_for_status

PROFILE = "Multi-Engine 1.0 (python3)-cpu"
FREE = "bench.free"
CATALOG = f"""
profiles:
  - id: "{PROFILE}"
    flavor_type: CPU
flavors:
  - name: {FREE}
    type: CPU
    promo_type: Free
    params: {{CPU: 1, memory: 1GiB}}
    capacity: 1
"""


def _body(name: str) -> dict[str, object]:
    return {"name": name, "profile_id": PROFILE, "flavor": FREE,
            "spec": {"storage": {"type": "evs"}}}


def _first_seen(api: httpx.Client, instance_id: str, done: set[str] | None,
                leaving: str | None, seen: list[float], stop: threading.Event) -> None:
    """Poll ``instance_id`` until its status is in ``done`` (or leaves ``leaving``); record
    the monotonic time it was first seen so."""
    while not stop.is_set():
        status = api.get(f"/{instance_id}").json()["status"]
        if (done is not None and status in done) or (leaving is not None and status != leaving):
            seen.append(time.monotonic())
            return


def admissions(server: ServerProcess, count: int) -> list[float]:
    """ms from the running instance seen STOPPED to the queue's head seen admitted."""
    latencies = []
    with server.client() as api, server.client() as other:
        running = api.post("", json=_body("holder-0")).json()["id"]
        wait_for_status(api, running, "RUNNING")
        waiting = [api.post("", json=_body(f"waiting-{i}")).json()["id"] for i in range(count)]
        for head in waiting:
            assert api.get(f"/{head}").json()["status"] == "CREATE_QUEUING"
            stopped: list[float] = []
            admitted: list[float] = []
            stop = threading.Event()
            watchers = [
                threading.Thread(target=_first_seen,
                                 args=(api, running, {"STOPPED"}, None, stopped, stop)),
                threading.Thread(target=_first_seen,
                                 args=(other, head, None, "CREATE_QUEUING", admitted, stop)),
            ]
            with httpx.Client(base_url=str(api.base_url), headers=dict(api.headers)) as actor:
                actor.post(f"/{running}/action", json={"action": "stop"}).raise_for_status()
                for watcher in watchers:
                    watcher.start()
                for watcher in watchers:
                    watcher.join(timeout=60)
            stop.set()
            latencies.append(max(0.0, admitted[0] - stopped[0]) * 1000)
            wait_for_status(api, head, "RUNNING")
            api.delete(f"/{running}")
            running = head
    return latencies


def operations(server: ServerProcess, queued: int, count: int) -> tuple[float, float]:
    """(queue operations/s, ms of one GET of a queued instance) with ``queued`` waiting."""
    with server.client() as api:
        ids = [api.post("", json=_body(f"q-{i:05d}")).json()["id"] for i in range(queued)]
        for instance_id in ids[-count // 2:]:
            api.post(f"/{instance_id}/action", json={"action": "dequeue"}).raise_for_status()
        began = time.perf_counter()
        for instance_id in ids[-count // 2:]:
            api.post(f"/{instance_id}/action", json={"action": "queue"}).raise_for_status()
            api.post(f"/{instance_id}/action", json={"action": "dequeue"}).raise_for_status()
        per_second = count / (time.perf_counter() - began)
        for instance_id in ids[-count // 2:]:  # all of them waiting again, for the reads
            api.post(f"/{instance_id}/action", json={"action": "queue"}).raise_for_status()
        reads = []
        for instance_id in ids[: 50]:
            start = time.perf_counter()
            api.get(f"/{instance_id}").raise_for_status()
            reads.append((time.perf_counter() - start) * 1000)
        return per_second, statistics.median(reads)


def rank_everyone(url: str, rounds: int = 20) -> tuple[float, float, int]:
    """(median ms of the read, median ms of computing every rank and estimate, how many
    were ranked), straight on the server's database, as its API does per response."""
    from demanager.domain.catalog import Flavor
    from demanager.domain.queueing import estimate_flavor_queue
    from demanager.store.database import make_engine, make_sessionmaker
    from demanager.store.instances import InstanceRepository

    flavor = Flavor(name=FREE, type="CPU", params={}, promo_type="Free", capacity=1)

    async def measure() -> tuple[float, float, int]:
        engine = make_engine(url)
        repo = InstanceRepository(make_sessionmaker(engine))
        reads, computes, ranked = [], [], 0
        try:
            for _ in range(rounds):
                start = time.perf_counter()
                holders, waiting, finished = await repo.queue_state(FREE)
                read = time.perf_counter()
                estimates = estimate_flavor_queue(
                    flavor, holders, waiting, now_ms=int(time.time() * 1000), finished=finished)
                computes.append((time.perf_counter() - read) * 1000)
                reads.append((read - start) * 1000)
                ranked = len(estimates.entries)
        finally:
            await engine.dispose()
        return statistics.median(reads), statistics.median(computes), ranked

    return asyncio.run(measure())


def run(store: str, root: Path, args: argparse.Namespace) -> list[str]:
    catalog = root / "catalog.yaml"
    catalog.write_text(CATALOG, encoding="utf-8")
    env = {
        "DEMANAGER_CATALOG_FILE": str(catalog),
        "DEMANAGER_INSTANCE_QUOTA": str(args.queued + args.admissions + 10),
        "DEMANAGER_RECONCILE_INTERVAL_SECONDS": "10",
        "DEMANAGER_LEASE_SECONDS": "30",
        "DEMANAGER_LOG_LEVEL": "warning",
        "DEMANAGER_RATE_LIMIT_PER_SECOND": "0",
    }
    saved = os.environ.pop("DEMANAGER_TEST_POSTGRES_URL", None) if store == "sqlite" else None
    server = ServerProcess(root / store, backend="fake", env=env)
    if saved is not None:
        os.environ["DEMANAGER_TEST_POSTGRES_URL"] = saved
    server.start()
    try:
        latencies = admissions(server, args.admissions)
        per_second, read_ms = operations(server, args.queued, args.operations)
        url = server.database.url or f"sqlite+aiosqlite:///{server.data_dir / 'demanager.db'}"
        state_ms, compute_ms, ranked = rank_everyone(url)
    finally:
        server.close()
    ordered = sorted(latencies)
    return [
        f"{store:<10} admission  p50 {statistics.median(ordered):6.1f} ms  "
        f"max {ordered[-1]:6.1f} ms  (n={len(ordered)}, slot seen freed -> head seen admitted)",
        f"{store:<10} queue ops  {per_second:7.1f} /s  (queue and dequeue, "
        f"{args.queued} queued, n={args.operations})",
        f"{store:<10} GET queued {read_ms:6.2f} ms median  (rank and estimate over the "
        f"{args.queued} queued)",
        f"{store:<10} all ranks  {state_ms + compute_ms:6.2f} ms median  (read {state_ms:.2f} ms "
        f"+ compute {compute_ms:.2f} ms, {ranked} ranks and estimates)",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queued", type=int, default=1000)
    parser.add_argument("--admissions", type=int, default=20)
    parser.add_argument("--operations", type=int, default=200)
    args = parser.parse_args()
    stores = ["sqlite"] + (["postgresql"] if os.environ.get("DEMANAGER_TEST_POSTGRES_URL") else [])
    rows = []
    with tempfile.TemporaryDirectory(prefix="dm-bench-queue-") as tmp:
        for store in stores:
            rows += run(store, Path(tmp), args)
    print("a free flavor of capacity 1, fake backend, sweep every 10 s (admission is by "
          "notification)")
    for row in rows:
        print(row)
    if "postgresql" not in stores:
        print("(set DEMANAGER_TEST_POSTGRES_URL to an admin URL to measure PostgreSQL too)")


if __name__ == "__main__":
    main()
