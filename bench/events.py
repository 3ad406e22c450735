"""Event fan-out: many live event streams while 1,000 instances change state.

One ``demanager serve`` (fake backend, SQLite unless ``DEMANAGER_TEST_POSTGRES_URL``
names a PostgreSQL admin URL) and, per phase, a fresh project with ``N`` subscribers
on its project-wide stream (``/events/stream``), all in one child process (httpx,
asyncio), so that the driver's requests and the streams' parsing do not share a
Python thread. The driver then takes ``--instances`` instances through a whole life
over the API, ``--concurrency`` requests at a time: create (the engine launches them
and sees them ready), stop, delete: six events each (``created``, ``launched``,
``ready``, ``stop_requested``, ``stopped``, ``deleted``).

Every subscriber records, for every event, the delivery latency: its wall-clock time
when the bytes arrived minus the event's ``at`` (the server's clock at the
transition, the same host; ``at`` is whole milliseconds, rounded down, so a latency
reads up to 1 ms long). When the driver is done it reads the project's whole event
log and every subscriber is checked against it: an event a subscriber never got is
lost, one it got twice or out of order is counted too.

The baseline is the same workload with one subscriber, in the same run and on the
same server; the figures of ``--subscribers`` are printed as ratios of it. Nothing
is asserted; loopback only; everything started is stopped.

    .venv/bin/python bench/events.py [--subscribers 200] [--instances 1000] [--concurrency 8]
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder comes first on the import path, where
# ``bench/queue.py`` would hide the standard library's ``queue`` (which asyncio's
# helpers and multiprocessing import). Python puts it there resolved; the subscribers'
# process starts with the path already fixed.
if str(Path(__file__).resolve().parent) in sys.path:
    sys.path.remove(str(Path(__file__).resolve().parent))

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import platform
import sqlite3
import tempfile
import time
from array import array
from dataclasses import dataclass
from importlib.metadata import version
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.server import ServerProcess

BODY = {
    "profile_id": "Multi-Engine 1.0 (python3)-cpu",
    "flavor": "modelarts.vm.cpu.2u",
    "spec": {"storage": {"type": "evs"}},
}
POLL = 0.25  # seconds between two counts of the instances while the engine works
OPEN_TIMEOUT = 120.0  # for every subscriber's stream to open
SETTLE_TIMEOUT = 60.0  # after the workload, for the last event to reach every subscriber


def percentile(ordered: list[float] | array[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


# --- the subscribers (a child process) --------------------------------------------------


class Subscriber:
    """One stream: the id and the latency of every event it got."""

    def __init__(self) -> None:
        self.ids: array[int] = array("q")
        self.latencies: array[float] = array("d")  # ms
        self.opened = asyncio.Event()
        self.done = asyncio.Event()
        self.last_id: int | None = None  # the log's last event, once the driver is done
        self.last_arrival = 0.0  # wall-clock ms

    def expect(self, last_id: int | None) -> None:
        self.last_id = last_id
        if last_id is None or (self.ids and self.ids[-1] >= last_id):
            self.done.set()

    async def listen(self, client: httpx.AsyncClient, url: str) -> None:
        async with client.stream("GET", url) as response:
            response.raise_for_status()
            buffer = b""
            async for chunk in response.aiter_bytes():
                arrived = time.time() * 1000  # before parsing: parsing is the client's cost
                *frames, buffer = (buffer + chunk).split(b"\n\n")
                for frame in frames:
                    if not frame.startswith(b"id: "):
                        if b": open" in frame:
                            self.opened.set()
                        continue  # the retry hint, keep-alives
                    event = json.loads(frame.partition(b"\ndata: ")[2])
                    self.ids.append(event["id"])
                    self.latencies.append(arrived - event["at"])
                    self.last_arrival = arrived
                if self.last_id is not None and self.ids and self.ids[-1] >= self.last_id:
                    self.done.set()


async def _subscribe(url: str, token: str, count: int, conn: Connection) -> dict[str, Any]:
    subscribers = [Subscriber() for _ in range(count)]
    client = httpx.AsyncClient(
        headers={"X-Auth-Token": token},
        timeout=httpx.Timeout(30.0, read=None),
        limits=httpx.Limits(max_connections=count, max_keepalive_connections=0),
    )
    tasks = [asyncio.create_task(s.listen(client, url)) for s in subscribers]
    try:
        opening = asyncio.ensure_future(asyncio.gather(*(s.opened.wait() for s in subscribers)))
        # A stream that fails (refused, an error status) ends the wait at once.
        waited: list[asyncio.Future[Any]] = [opening, *tasks]
        await asyncio.wait(waited, timeout=OPEN_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        if not opening.done():
            opening.cancel()
            failed = [t.exception() for t in tasks if t.done() and not t.cancelled()]
            raise RuntimeError(f"the streams did not open: {failed[:1]}")
        conn.send("open")
        expected: list[int] = await asyncio.to_thread(conn.recv)
        for s in subscribers:
            s.expect(expected[-1] if expected else None)
        settling = asyncio.gather(*(s.done.wait() for s in subscribers))
        with contextlib.suppress(TimeoutError):  # what is missing is counted as lost
            await asyncio.wait_for(settling, SETTLE_TIMEOUT)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.aclose()
    failed = [t.exception() for t in tasks if not t.cancelled() and t.exception()]
    return summarize(subscribers, expected, [repr(e) for e in failed])


def summarize(
    subscribers: list[Subscriber], expected: list[int], failed: list[str]
) -> dict[str, Any]:
    wanted = set(expected)
    lost = duplicated = out_of_order = extra = gapped = 0
    latencies: list[float] = []
    for s in subscribers:
        got = set(s.ids)
        missing = len(wanted - got)
        lost += missing
        gapped += missing > 0
        extra += len(got - wanted)
        duplicated += len(s.ids) - len(got)
        out_of_order += sum(b <= a for a, b in zip(s.ids, s.ids[1:], strict=False))
        latencies.extend(s.latencies)
    latencies.sort()
    counts = [len(s.ids) for s in subscribers]
    return {
        "expected": len(expected),
        "received_min": min(counts),
        "received_max": max(counts),
        "deliveries": len(latencies),
        "lost": lost,
        "gapped": gapped,
        "extra": extra,
        "duplicated": duplicated,
        "out_of_order": out_of_order,
        "p50": percentile(latencies, 0.5),
        "p90": percentile(latencies, 0.9),
        "p99": percentile(latencies, 0.99),
        "max": latencies[-1] if latencies else float("nan"),
        "last_arrival_ms": max(s.last_arrival for s in subscribers),
        "cpu_s": time.process_time(),
        "failed": failed[:3],
    }


def subscribe(url: str, token: str, count: int, conn: Connection) -> None:
    """The child process: open ``count`` streams, say so, and, once told the log's event
    ids, wait for the last one to reach every stream and send back the figures."""
    conn.send(asyncio.run(_subscribe(url, token, count, conn)))


# --- the driver -------------------------------------------------------------------------


async def count(api: httpx.AsyncClient, status: str | None = None) -> int:
    params = {"de_type": "Notebook", "limit": "1", **({"status": status} if status else {})}
    response = await api.get("/instances", params=params)
    response.raise_for_status()
    return int(response.json()["total_count"])


async def wait_count(api: httpx.AsyncClient, status: str | None, wanted: int) -> None:
    while await count(api, status) != wanted:
        await asyncio.sleep(POLL)


async def each(concurrency: int, calls: list[Any]) -> list[httpx.Response]:
    """Send the requests ``calls`` make, at most ``concurrency`` at a time; all must pass."""
    gate = asyncio.Semaphore(concurrency)

    async def one(call: Any) -> httpx.Response:
        async with gate:
            response: httpx.Response = await call()
            response.raise_for_status()
            return response

    return await asyncio.gather(*(one(c) for c in calls))


async def create(api: httpx.AsyncClient, instances: int, concurrency: int) -> list[str]:
    created = await each(
        concurrency,
        [
            lambda i=i: api.post("/instances", json={"name": f"bench-{i:05d}", **BODY})
            for i in range(instances)
        ],
    )
    await wait_count(api, "RUNNING", instances)
    return [r.json()["id"] for r in created]


async def act(
    api: httpx.AsyncClient, ids: list[str], action: str, status: str, concurrency: int
) -> None:
    """``action`` on every instance, then wait until all are ``status``."""
    await each(
        concurrency,
        [lambda i=i: api.post(f"/instances/{i}/action", json={"action": action}) for i in ids],
    )
    await wait_count(api, status, len(ids))


async def latest_event(api: httpx.AsyncClient) -> int:
    response = await api.get("/events", params={"limit": 1})
    response.raise_for_status()
    total = response.json()["total"]
    if not total:
        return 0
    response = await api.get("/events", params={"limit": 1, "offset": total - 1})
    response.raise_for_status()
    return int(response.json()["events"][0]["id"])


async def event_log(api: httpx.AsyncClient, after: int) -> tuple[list[int], list[int]]:
    """The project's event ids and times (ms) after ``after``, oldest first."""
    ids: list[int] = []
    ats: list[int] = []
    while True:
        response = await api.get("/events", params={"limit": 1000, "after": after})
        response.raise_for_status()
        page = response.json()["events"]
        if not page:
            return ids, ats
        ids += [e["id"] for e in page]
        ats += [e["at"] for e in page]
        after = ids[-1]


async def answer(conn: Connection, child: BaseProcess, timeout: float) -> Any:
    """What the subscribers' process sends next; None if it exits or stays silent."""
    waited: list[Any] = [conn, child.sentinel]
    ready: list[Any] = await asyncio.to_thread(wait, waited, timeout)
    return conn.recv() if conn in ready else None


def server_cpu(server: ServerProcess) -> float:
    assert server.proc is not None
    times = psutil.Process(server.proc.pid).cpu_times()
    return times.user + times.system


@dataclass
class Phase:
    subscribers: int
    elapsed: float  # the workload: first request to the last instance gone
    events: int
    first_at: int  # ms
    produced_s: float  # first event's ``at`` to the last's
    server_cpu: float
    figures: dict[str, Any]

    @property
    def rate(self) -> float:
        """Deliveries per second, over ``delivery_s``."""
        return float(self.figures["deliveries"]) / max(self.delivery_s, 1e-9)

    @property
    def delivery_s(self) -> float:
        """From the first event's time to the last delivery to any subscriber."""
        return (float(self.figures["last_arrival_ms"]) - self.first_at) / 1000


async def phase(
    server: ServerProcess,
    api: httpx.AsyncClient,
    ids: list[str],
    subscribers: int,
    concurrency: int,
) -> Phase:
    """Open ``subscribers`` streams, stop every instance of ``ids``, collect the figures."""
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    stream = str(api.base_url.join("events/stream"))
    child = context.Process(
        target=subscribe, args=(stream, server.token, subscribers, theirs), daemon=True
    )
    child.start()
    try:
        if await answer(ours, child, OPEN_TIMEOUT + 30) != "open":
            raise SystemExit(f"{subscribers} subscribers: the streams did not open")
        before = await latest_event(api)
        cpu = server_cpu(server)
        began = time.perf_counter()
        await act(api, ids, "stop", "STOPPED", concurrency)
        elapsed = time.perf_counter() - began
        events, ats = await event_log(api, before)
        ours.send(events)
        figures: dict[str, Any] | None = await answer(ours, child, SETTLE_TIMEOUT + 60)
        if figures is None:
            raise SystemExit(f"{subscribers} subscribers: no figures came back")
        cpu = server_cpu(server) - cpu
    finally:
        if child.is_alive():
            child.terminate()
        child.join(10)
        ours.close()
    produced = (ats[-1] - ats[0]) / 1000 if ats else 0.0
    return Phase(subscribers, elapsed, len(events), ats[0] if ats else 0, produced, cpu, figures)


# --- the report -------------------------------------------------------------------------


def versions(server: ServerProcess) -> str:
    store = "PostgreSQL" if server.database.url else f"SQLite {sqlite3.sqlite_version}"
    return (
        f"Python {platform.python_version()}, demanager {version('demanager')}, "
        f"uvicorn {version('uvicorn')}, SQLAlchemy {version('sqlalchemy')}, {store}, "
        f"httpx {version('httpx')} (subscribers)"
    )


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def report(
    phases: list[Phase], instances: int, concurrency: int, server: ServerProcess, load: float
) -> None:
    print(
        f"Event fan-out: {instances} RUNNING instances stopped over the API ({concurrency} "
        "requests at a time; stop_requested and stopped: 2 events each), one `demanager "
        "serve` with the fake backend, subscribers on the project-wide stream"
    )
    print(
        f"{os.cpu_count()} cores ({cpu_model()}), load average {load:.2f} before the run; "
        f"{versions(server)}"
    )
    print(
        f"{'subscribers':>11} {'events':>7} {'got min':>7} {'lost':>5} "
        f"{'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8} "
        f"{'workload':>9} {'events/s':>8} {'deliv/s':>9} {'srv CPU':>8} {'sub CPU':>8}"
    )
    for p in phases:
        f = p.figures
        print(
            f"{p.subscribers:>11} {p.events:>7} {f['received_min']:>7} {f['lost']:>5} "
            f"{f['p50']:>8.1f} {f['p90']:>8.1f} {f['p99']:>8.1f} {f['max']:>8.1f} "
            f"{p.elapsed:>8.1f}s {p.events / max(p.produced_s, 1e-9):>8.0f} "
            f"{p.rate:>9.0f} "
            f"{p.server_cpu:>7.1f}s {f['cpu_s']:>7.1f}s"
        )
        problems = {k: f[k] for k in ("extra", "duplicated", "out_of_order") if f[k]}
        if f["lost"]:
            problems["subscribers with a gap"] = f["gapped"]
        if problems or f["failed"]:
            print(f"{'':>11} irregular: {problems} {' '.join(f['failed'])}")
    base = phases[0]
    for p in phases[1:]:
        f, b = p.figures, base.figures

        def ratio(mine: float, theirs: float) -> str:
            return f"{mine / theirs:.2f}" if theirs else "n/a"

        print(
            f"ratio {p.subscribers} / {base.subscribers} subscribers: "
            f"p50 {ratio(f['p50'], b['p50'])}, p90 {ratio(f['p90'], b['p90'])}, "
            f"p99 {ratio(f['p99'], b['p99'])}, max {ratio(f['max'], b['max'])}, "
            f"workload time {ratio(p.elapsed, base.elapsed)}, "
            f"deliveries/s {ratio(p.rate, base.rate)}, "
            f"server CPU {ratio(p.server_cpu, base.server_cpu)}"
        )
        extra = f["deliveries"] - b["deliveries"]
        if extra > 0:
            print(
                f"server CPU per added delivery: "
                f"{(p.server_cpu - base.server_cpu) / extra * 1e6:.0f} µs"
            )


async def run(args: argparse.Namespace, root: Path) -> None:
    load = os.getloadavg()[0]
    server = ServerProcess(
        root / "server",
        backend="fake",
        env={
            "DEMANAGER_INSTANCE_QUOTA": str(args.instances + 10),
            "DEMANAGER_RECONCILE_INTERVAL_SECONDS": "2",  # the default; the engine is told anyway
            "DEMANAGER_LOG_LEVEL": "warning",
            # One token drives the whole load; the per-token limit would measure itself.
            "DEMANAGER_RATE_LIMIT_PER_SECOND": "0",
        },
    )
    server.start()
    try:
        async with httpx.AsyncClient(
            base_url=f"{server.url}/v1/{server.project}/demanager",
            headers={"X-Auth-Token": server.token},
            timeout=60.0,
            limits=httpx.Limits(max_connections=args.concurrency + 1),
        ) as api:
            ids = await create(api, args.instances, args.concurrency)
            baseline = await phase(server, api, ids, 1, args.concurrency)
            # Started again with no stream open, so both phases stop the same instances.
            await act(api, ids, "start", "RUNNING", args.concurrency)
            fanned = await phase(server, api, ids, args.subscribers, args.concurrency)
    finally:
        server.close()
    report([baseline, fanned], args.instances, args.concurrency, server, load)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=200)
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument(
        "--concurrency", type=int, default=8, help="API requests the driver has in flight at once"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dm-bench-events-") as tmp:
        asyncio.run(run(args, Path(tmp)))


if __name__ == "__main__":
    main()
