"""API latency with 1,000 instances in the store (fake backend).

Prints p50/p99 latency and requests/s for get-one and list-200, on SQLite and,
when ``DEMANAGER_TEST_POSTGRES_URL`` names a PostgreSQL server (admin URL), on
PostgreSQL too. Each store runs in its own ``demanager serve`` process; requests
are sequential over one keep-alive connection.

    .venv/bin/python bench/api.py [--instances 1000] [--requests 2000]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.server import ServerProcess


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(api: httpx.Client, paths: list[str]) -> tuple[float, float, float]:
    for path in paths[:50]:  # warm-up
        api.get(path).raise_for_status()
    latencies = []
    began = time.perf_counter()
    for path in paths:
        start = time.perf_counter()
        api.get(path).raise_for_status()
        latencies.append(time.perf_counter() - start)
    total = time.perf_counter() - began
    return percentile(latencies, 0.5) * 1000, percentile(latencies, 0.99) * 1000, len(paths) / total


def run(store: str, root: Path, instances: int, requests: int) -> list[str]:
    env = {
        "DEMANAGER_INSTANCE_QUOTA": str(instances + 10),
        # The default sweep (every 2 s over all 1,000 RUNNING instances) runs meanwhile.
        "DEMANAGER_RECONCILE_INTERVAL_SECONDS": "2",
        "DEMANAGER_LOG_LEVEL": "warning",
        # One token drives the whole load; the per-token limit would measure itself.
        "DEMANAGER_RATE_LIMIT_PER_SECOND": "0",
    }
    if store == "sqlite":
        saved = os.environ.pop("DEMANAGER_TEST_POSTGRES_URL", None)
    server = ServerProcess(root / store, backend="fake", env=env)
    if store == "sqlite" and saved is not None:
        os.environ["DEMANAGER_TEST_POSTGRES_URL"] = saved
    server.start()
    try:
        with server.client() as api:
            ids = []
            for i in range(instances):
                body = {
                    "name": f"bench-{i:05d}",
                    "profile_id": "Multi-Engine 1.0 (python3)-cpu",
                    "flavor": "modelarts.vm.cpu.2u",
                    "spec": {"storage": {"type": "evs"}},
                }
                ids.append(api.post("", json=body).json()["id"])
            while (
                api.get("", params={"de_type": "Notebook", "status": "RUNNING"}).json()[
                    "total_count"
                ]
                < instances
            ):
                time.sleep(0.5)
            rng = random.Random(7)
            gets = [f"/{rng.choice(ids)}" for _ in range(requests)]
            lists = [
                f"?de_type=Notebook&limit=200&offset={rng.randrange(0, instances - 200)}"
                for _ in range(max(50, requests // 10))
            ]
            rows = []
            for label, paths in (("get-one", gets), ("list-200", lists)):
                p50, p99, rps = measure(api, paths)
                rows.append(
                    f"{store:<10} {label:<9} p50 {p50:7.2f} ms  p99 {p99:7.2f} ms  "
                    f"{rps:8.1f} req/s  (n={len(paths)})"
                )
            return rows
    finally:
        server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    stores = ["sqlite"] + (["postgresql"] if os.environ.get("DEMANAGER_TEST_POSTGRES_URL") else [])
    rows = []
    with tempfile.TemporaryDirectory(prefix="dm-bench-api-") as tmp:
        for store in stores:
            rows += run(store, Path(tmp), args.instances, args.requests)
    print(f"{args.instances} RUNNING instances in the store, engine sweeping every 2 s, "
          "sequential requests over keep-alive")
    for row in rows:
        print(row)
    if "postgresql" not in stores:
        print("(set DEMANAGER_TEST_POSTGRES_URL to an admin URL to measure PostgreSQL too)")


if __name__ == "__main__":
    main()
