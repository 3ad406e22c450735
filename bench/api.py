"""API latency with 1,000 instances in the store (fake backend).

Prints p50/p99 latency and requests/s for get-one and list-200, on SQLite and,
when ``DEMANAGER_TEST_POSTGRES_URL`` names a PostgreSQL server (admin URL), on
PostgreSQL too. Each store runs in its own ``demanager serve`` process, driven by a
member's API token (checked against the store on every request, as in production).
Requests are first sequential over one keep-alive connection, then, when ``wrk`` is
installed, at ``--connections`` concurrent connections for ``--seconds`` each (the
load bench/peers.py puts on JupyterHub and demanager).

Each concurrent run also gives the server's CPU time per request, which a busy machine
disturbs much less than the rate. With ``--profile DIR``, py-spy samples the server
(the thread holding the GIL, so idle threads do not count) during each concurrent
load and the busiest functions are printed (self and total share of the samples); the
speedscope files are left in DIR.

    .venv/bin/python bench/api.py [--instances 1000] [--requests 2000]
                                  [--connections 16] [--seconds 10] [--profile DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import httpx
import psutil

# The repository root instead of bench/, whose queue.py would shadow the standard library's
# (psycopg, which tests/server.py uses for PostgreSQL, imports it).
sys.path.remove(str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.server import ServerProcess

#: py-spy from PATH or from the virtualenv running this script.
PY_SPY = shutil.which("py-spy", path=os.pathsep.join(
    [str(Path(sys.executable).parent), os.environ.get("PATH", "")]))


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


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of the process, all its threads."""
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def wrk(url: str, token: str, connections: int, seconds: float,
        pid: int | None = None) -> tuple[float, float, float, float]:
    """(p50 ms, p99 ms, req/s, server CPU ms per request) of ``wrk -t1`` on one URL;
    non-2xx answers are an error. The CPU figure (of process ``pid``) holds still on a
    busy machine, where the rate does not."""
    before = cpu_seconds(pid) if pid is not None else 0.0
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "60s",
         "--latency", "-H", f"X-Auth-Token: {token}", url],
        check=True, capture_output=True, text=True,
    ).stdout
    used = cpu_seconds(pid) - before if pid is not None else 0.0
    if "Non-2xx" in out:
        raise RuntimeError(f"wrk saw errors:\n{out}")
    done = re.search(r"(\d+) requests in", out)
    latency = dict(re.findall(r"^\s+(50|99)(?:\.0+)?%\s+(\S+)\s*$", out, re.M))
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if rate is None or len(latency) < 2:
        raise RuntimeError(f"unexpected output of wrk:\n{out}")
    per_request = 1000 * used / int(done.group(1)) if done else 0.0
    return _ms(latency["50"]), _ms(latency["99"]), float(rate.group(1)), per_request


def top_functions(speedscope: Path, count: int = 15) -> list[str]:
    """The busiest functions of a py-spy speedscope file, every thread together: share of
    samples where the function is the innermost frame (self) and anywhere on the stack
    (total)."""
    data = json.loads(speedscope.read_text())
    names = [f"{f['name']} ({Path(f.get('file') or '?').name})"
             for f in data["shared"]["frames"]]
    own: defaultdict[str, float] = defaultdict(float)
    anywhere: defaultdict[str, float] = defaultdict(float)
    samples = 0.0
    for thread in data["profiles"]:
        for stack, weight in zip(thread["samples"], thread["weights"], strict=True):
            if not stack:
                continue
            samples += weight
            own[names[stack[-1]]] += weight
            for name in {names[i] for i in stack}:
                anywhere[name] += weight
    rows = [f"  self {100 * n / samples:5.1f}%  total {100 * anywhere[f] / samples:5.1f}%  {f}"
            for f, n in sorted(own.items(), key=lambda kv: -kv[1])[:count]]
    return [f"py-spy: {samples:.1f} s of samples, top {count} functions by self time", *rows]


def profile(pid: int, url: str, token: str, connections: int, seconds: float,
            folder: Path, label: str) -> list[str]:
    """Sample the server with py-spy while wrk loads ``url``."""
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{label}.speedscope.json"
    spy = subprocess.Popen(
        [str(PY_SPY), "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate",
         "200", "--gil", "--nonblocking", "--format", "speedscope", "-o", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wrk(url, token, connections, seconds)
    finally:
        spy.wait(timeout=seconds + 60)
    return top_functions(out)


def run(store: str, root: Path, args: argparse.Namespace) -> tuple[list[str], list[str]]:
    env = {
        "DEMANAGER_INSTANCE_QUOTA": str(args.instances + 10),
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
        token = server.make_token(server.project, "bench-member")
        with server.client(token) as api:
            ids = []
            for i in range(args.instances):
                body = {
                    "name": f"bench-{i:05d}",
                    "profile_id": "Multi-Engine 1.0 (python3)-cpu",
                    "flavor": "modelarts.vm.cpu.2u",
                    "spec": {"storage": {"type": "evs"}},
                }
                response = api.post("", json=body)
                response.raise_for_status()
                ids.append(response.json()["id"])
            while (
                api.get("", params={"de_type": "Notebook", "status": "RUNNING"}).json()[
                    "total_count"
                ]
                < args.instances
            ):
                time.sleep(0.5)
            rng = random.Random(7)
            gets = [f"/{rng.choice(ids)}" for _ in range(args.requests)]
            lists = [
                f"?de_type=Notebook&limit=200&offset={rng.randrange(0, args.instances - 200)}"
                for _ in range(max(50, args.requests // 10))
            ]
            rows = []
            for label, paths in (("get-one", gets), ("list-200", lists)):
                p50, p99, rps = measure(api, paths)
                rows.append(
                    f"{store:<10} {label:<9} sequential p50 {p50:7.2f} ms  p99 {p99:7.2f} ms  "
                    f"{rps:8.1f} req/s  (n={len(paths)})"
                )
        base = f"{server.url}/v1/{server.project}/demanager/instances"
        urls = (("get-one", f"{base}/{ids[len(ids) // 2]}"),
                ("list-200", f"{base}?de_type=Notebook&offset=400&limit=200"))
        assert server.proc is not None
        pid = server.proc.pid
        if shutil.which("wrk"):
            for label, url in urls:
                p50, p99, rps, cpu = wrk(url, token, args.connections, args.seconds, pid)
                rows.append(
                    f"{store:<10} {label:<9} c={args.connections:<8} p50 {p50:7.2f} ms  "
                    f"p99 {p99:7.2f} ms  {rps:8.1f} req/s  server CPU {cpu:5.2f} ms/req  "
                    f"(wrk, {args.seconds:g} s)"
                )
        profiled: list[str] = []
        if args.profile is not None and PY_SPY is not None:
            for label, url in urls:
                profiled += [f"{store}, {label} at c={args.connections}:",
                             *profile(pid, url, token, args.connections, args.seconds,
                                      args.profile, f"{store}-{label}")]
        return rows, profiled
    finally:
        server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--profile", type=Path, default=None,
                        help="sample the server with py-spy under the list-200 load")
    args = parser.parse_args()
    if args.profile is not None and not shutil.which("wrk"):
        parser.error("--profile samples the server under wrk's load: install wrk "
                     "(apt-get install wrk)")
    stores = ["sqlite"] + (["postgresql"] if os.environ.get("DEMANAGER_TEST_POSTGRES_URL") else [])
    rows: list[str] = []
    profiles: list[str] = []
    with tempfile.TemporaryDirectory(prefix="dm-bench-api-") as tmp:
        for store in stores:
            measured, profiled = run(store, Path(tmp), args)
            rows += measured
            profiles += profiled
    print(f"{args.instances} RUNNING instances in the store, engine sweeping every 2 s, "
          "a member's token")
    for row in rows:
        print(row)
    if not shutil.which("wrk"):
        print("(install wrk to measure at concurrent connections)")
    if "postgresql" not in stores:
        print("(set DEMANAGER_TEST_POSTGRES_URL to an admin URL to measure PostgreSQL too)")
    for line in profiles:
        print(line)


if __name__ == "__main__":
    main()
