"""How does the engine scale with replicas, and does a stop wait for booting instances?

Prints, in one run:

* reconcile throughput (transitions/s) of 1, 2 and 3 ``demanager serve`` replicas
  (fake backend, separate processes) sharing one fresh database per run, over
  10,000 instances inserted straight into the store as ``CREATING`` (copies of the
  row the API's create writes): the time until all are ``RUNNING``; then, after
  one UPDATE records a stop for all of them as the API's stop does (``STOPPING``,
  desired ``STOPPED``), the time until all are ``STOPPED``. With the row writes
  per instance, the replicas' CPU per transition, the cores their sweeps use
  between the two phases (all instances RUNNING, nothing to do), and the ratios
  of 2 and 3 replicas against 1. PostgreSQL when ``DEMANAGER_BENCH_POSTGRES_URL`` names a
  server (an admin URL: each run creates and drops a database of its own), else
  one SQLite file;
* the latency of a stop while N instances boot (N = 8, 50, 200; N = 0 is the
  baseline): one replica, 8 workers, a fake start delay of 20 s. A few instances
  are brought to ``RUNNING`` first, then N more are created and left booting, and
  the first ones are stopped through the API one at a time; each time runs from
  sending the stop to the first GET (every 10 ms) that shows ``STOPPED``.

Nothing is asserted; loopback only; everything started is stopped.

    .venv/bin/python bench/replicas.py [--instances 10000] [--replicas 1,2,3]
        [--booting 0,8,50,200] [--start-delay 20] [--samples 5] [--part all|throughput|stop]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.server import ServerProcess

from demanager.catalog import load_catalog
from demanager.domain.instance import new_instance_id
from demanager.engine.clock import SystemClock
from demanager.engine.service import InstanceService
from demanager.identity.principal import Principal, Role
from demanager.store.database import make_engine, make_sessionmaker, upgrade
from demanager.store.instances import InstanceRepository
from demanager.store.projects import ProjectRepository
from demanager.store.tables import InstanceRow, QuotaUsageRow

BODY = {
    "name": "bench-replicas",
    "profile_id": "Multi-Engine 1.0 (python3)-cpu",
    "flavor": "modelarts.vm.cpu.2u",
    "spec": {"storage": {"type": "evs"}},
}
TABLE = InstanceRow.__table__
PROGRESS_POLL = 0.2  # seconds between two counts of the store while replicas work
STOP_POLL = 0.01  # seconds between two GETs while a stop is awaited
CHUNK = 1000  # rows per INSERT statement


# --- one fresh database per run ---------------------------------------------------------


@contextlib.contextmanager
def fresh_database(root: Path, admin_url: str | None) -> Iterator[str]:
    """The SQLAlchemy URL of a new, migrated database, dropped (or left in ``root``) after."""
    if not admin_url:
        root.mkdir(parents=True, exist_ok=True)
        url = f"sqlite+aiosqlite:///{root / 'shared.db'}"
        upgrade(url)
        yield url
        return
    import psycopg

    name = f"dm_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    url = f"{base}/{name}"
    try:
        upgrade(url)
        yield url
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.asynccontextmanager
async def store(url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(url)
    try:
        yield engine
    finally:
        await engine.dispose()


def replica(data_dir: Path, database_url: str, secret_key: str, **env: str) -> ServerProcess:
    """A ``demanager serve`` with the fake backend on the shared database."""
    return ServerProcess(
        data_dir,
        backend="fake",
        env={
            "DEMANAGER_DATABASE_URL": database_url,
            "DEMANAGER_SECRET_KEY": secret_key,  # replicas of one database share it
            "DEMANAGER_LOG_LEVEL": "warning",
            "DEMANAGER_RATE_LIMIT_PER_SECOND": "0",  # the bench's polling would measure it
            **{f"DEMANAGER_{key.upper()}": value for key, value in env.items()},
        },
    )


def error_lines(servers: list[ServerProcess]) -> int:
    """Lines of the replicas' logs that report an error (0 on a clean run)."""
    count = 0
    for server in servers:
        with contextlib.suppress(OSError):
            text = server.log_path.read_text(errors="replace")
            count += sum("ERROR" in line or "Traceback" in line for line in text.splitlines())
    return count


# --- part 1: throughput -----------------------------------------------------------------


async def template_row(engine: AsyncEngine, instances: int) -> dict[str, Any]:
    """The row the API's create stores for BODY, then removed again: the copies the bench
    inserts are built from it, so they are what a real create would have written."""
    sessions = make_sessionmaker(engine)
    service = InstanceService(
        repository=InstanceRepository(sessions),
        projects=ProjectRepository(sessions),
        catalog=load_catalog(None),
        clock=SystemClock(),
        notify=lambda _instance_id: None,
        instance_quota=instances,
        min_auto_stop=3600,
        object_storage=False,
    )
    principal = Principal("0" * 32, "bench", uuid.uuid4().hex, Role.MEMBER)
    created = await service.create(principal=principal, body=BODY)
    async with engine.begin() as conn:
        row = dict(
            (await conn.execute(select(TABLE).where(InstanceRow.id == created.id))).one()._mapping
        )
        await conn.execute(delete(InstanceRow))
        await conn.execute(update(QuotaUsageRow).values(used=0))
    return row


async def insert_copies(engine: AsyncEngine, row: dict[str, Any], instances: int) -> None:
    """``instances`` copies of ``row`` under new ids and names, in one transaction."""
    now = SystemClock().now_ms()
    rows = []
    for i in range(instances):
        name = f"bench-{i:05d}"
        rows.append(
            {
                **row,
                "id": new_instance_id(),
                "name": name,
                "live_name": name,
                "created_at": now,
                "updated_at": now,
                "requested_at": now,
            }
        )
    async with engine.begin() as conn:
        for start in range(0, len(rows), CHUNK):
            await conn.execute(insert(InstanceRow), rows[start : start + CHUNK])
        await conn.execute(update(QuotaUsageRow).values(used=instances))


async def request_stop_of_all(engine: AsyncEngine) -> int:
    """What the API's stop writes for a RUNNING (or UNAVAILABLE) instance, for all of them
    in one UPDATE; returns how many it stopped."""
    now = SystemClock().now_ms()
    async with engine.begin() as conn:
        result = await conn.execute(
            update(InstanceRow)
            .where(InstanceRow.status.in_(["RUNNING", "UNAVAILABLE"]))
            .values(
                status="STOPPING",
                desired="STOPPED",
                stop_at=None,
                requested_at=now,
                updated_at=now,
                version=InstanceRow.version + 1,
            )
        )
    return int(result.rowcount)


async def count(engine: AsyncEngine, status: str) -> int:
    async with engine.connect() as conn:
        found = await conn.scalar(select(func.count()).where(InstanceRow.status == status))
        return int(found or 0)


async def statuses(engine: AsyncEngine) -> dict[str, int]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(InstanceRow.status, func.count()).group_by(InstanceRow.status)
        )
        return {status: int(n) for status, n in rows.all()}


async def writes(engine: AsyncEngine) -> int:
    """Row writes so far: every save and transition bumps the row's version by one."""
    async with engine.connect() as conn:
        return int(await conn.scalar(select(func.sum(InstanceRow.version))) or 0)


@dataclass
class Phase:
    instances: int
    seconds: float
    done: int
    writes: int
    cpu: float
    """CPU seconds the replicas used meanwhile, all of them together."""
    left: dict[str, int]
    """Statuses of the whole store when the phase timed out; empty when it finished."""

    @property
    def finished(self) -> bool:
        return self.done >= self.instances

    @property
    def rate(self) -> float:
        """Transitions per second: one per instance (CREATING -> RUNNING, or
        STOPPING -> STOPPED), the number done over the time taken."""
        return self.done / self.seconds

    def __str__(self) -> str:
        text = (
            f"{self.seconds:7.1f} s {self.rate:7.0f} {self.writes / max(self.instances, 1):11.1f}"
            f" {self.cpu / max(self.done, 1) * 1000:10.1f}"
        )
        if not self.finished:
            found = ", ".join(f"{n} {status}" for status, n in sorted(self.left.items()))
            text += f" (timed out with {self.done} of {self.instances} done; store: {found})"
        return text


def cpu_seconds(servers: list[ServerProcess]) -> float:
    """CPU time the replicas' processes have used so far (user + system)."""
    total = 0.0
    for server in servers:
        assert server.proc is not None
        times = psutil.Process(server.proc.pid).cpu_times()
        total += times.user + times.system
    return total


async def measure(
    engine: AsyncEngine,
    servers: list[ServerProcess],
    start: Callable[[], Awaitable[tuple[int, int]]],
    status: str,
    timeout: float,
) -> Phase:
    """Time ``start`` (which sets instances in motion and returns how many, and how many
    row writes it made itself) until that many instances are in ``status``."""
    writes_before, cpu_before = await writes(engine), cpu_seconds(servers)
    began = time.perf_counter()
    instances, own_writes = await start()
    done = 0
    while time.perf_counter() - began < timeout:
        done = await count(engine, status)
        if done >= instances:
            break
        await asyncio.sleep(PROGRESS_POLL)
    elapsed = time.perf_counter() - began
    cpu = cpu_seconds(servers) - cpu_before
    left = {} if done >= instances else await statuses(engine)
    made = await writes(engine) - writes_before - own_writes
    return Phase(instances, elapsed, done, made, cpu, left)


@dataclass
class Throughput:
    create: Phase
    at_rest: float | None = None
    """Cores the replicas used together while all instances were RUNNING and nothing
    changed: the steady cost of their sweeps."""
    stop: Phase | None = None


async def throughput(
    url: str, servers: list[ServerProcess], instances: int, args: argparse.Namespace
) -> Throughput:
    """The create phase, the cost at rest, then the stop phase (when the creates all
    finished)."""
    async with store(url) as engine:
        row = await template_row(engine, instances)
        for server in servers:
            server.start()

        async def create() -> tuple[int, int]:
            await insert_copies(engine, row, instances)
            return instances, instances * row["version"]

        async def stop() -> tuple[int, int]:
            stopping = await request_stop_of_all(engine)
            return stopping, stopping  # the UPDATE bumped each version once

        result = Throughput(await measure(engine, servers, create, "RUNNING", args.timeout))
        if not result.create.finished:
            return result
        await asyncio.sleep(args.sweep_interval)  # let the last drives finish
        cpu, began = cpu_seconds(servers), time.perf_counter()
        await asyncio.sleep(args.rest_seconds)
        result.at_rest = (cpu_seconds(servers) - cpu) / (time.perf_counter() - began)
        result.stop = await measure(engine, servers, stop, "STOPPED", args.timeout)
        return result


def run_throughput(args: argparse.Namespace, root: Path, admin_url: str | None) -> None:
    label = "PostgreSQL" if admin_url else "SQLite (one file; SQLite runs one writer at a time)"
    print(
        f"Reconcile throughput: {args.instances} instances, fake backend, {label}, "
        f"replicas are `demanager serve` processes, sweep every {args.sweep_interval:g} s, "
        f"{os.cpu_count()} cores",
        flush=True,
    )
    header = (
        f"{'replicas':>8}  {'phase':<20}{'time':>9}{'tr/s':>8}{'writes/inst':>12}{'CPU ms/tr':>11}"
    )
    print(header, flush=True)
    results: dict[int, Throughput] = {}
    for n in args.replicas:
        run_root = root / f"throughput-{n}"
        key = secrets.token_hex(32)
        with fresh_database(run_root, admin_url) as url:
            servers = [
                replica(
                    run_root / f"replica{i}",
                    url,
                    key,
                    instance_quota=str(args.instances + 10),
                    reconcile_interval_seconds=str(args.sweep_interval),
                )
                for i in range(n)
            ]
            try:
                result = asyncio.run(throughput(url, servers, args.instances, args))
            finally:
                for server in servers:
                    server.close()
        results[n] = result
        errors = error_lines(servers)
        note = f"  ({errors} error lines in the replicas' logs)" if errors else ""
        print(f"{n:>8}  CREATING -> RUNNING {result.create}{note}", flush=True)
        if result.at_rest is not None:
            print(
                f"{'':>8}  then at rest, all RUNNING: the replicas' sweeps use "
                f"{result.at_rest:.2f} cores",
                flush=True,
            )
        print(f"{'':>8}  STOPPING -> STOPPED {result.stop or '   (not run)'}", flush=True)
    base = results.get(1)
    for n, result in results.items():
        if n != 1 and base is not None:
            print(
                f"ratio {n} / 1 replica   create {_ratio(result.create, base.create)}   "
                f"stop {_ratio(result.stop, base.stop)}"
            )


def _ratio(phase: Phase | None, base: Phase | None) -> str:
    if phase is None or base is None or not (phase.finished and base.finished):
        return "  n/a"
    return f"{phase.rate / base.rate:5.2f}"


# --- part 2: stop latency while instances boot ------------------------------------------


@dataclass
class StopLatency:
    booting: int
    launched: int
    """How many of the booting instances had been launched when the stops began."""
    answered: list[float]
    """Seconds each stop request took to answer."""
    stopped: list[float]
    """Seconds from sending each stop to the first GET that showed STOPPED."""
    timed_out: bool
    still_booting: int


async def wait_status(
    api: httpx.AsyncClient, instance_id: str, status: str, timeout: float, poll: float
) -> float | None:
    """Seconds until a GET shows ``status``, or None after ``timeout``."""
    began = time.perf_counter()
    while time.perf_counter() - began < timeout:
        response = await api.get(f"/{instance_id}")
        response.raise_for_status()
        if response.json()["status"] == status:
            return time.perf_counter() - began
        await asyncio.sleep(poll)
    return None


async def launched(engine: AsyncEngine) -> int:
    """Instances still CREATING whose workload has been launched (a handle is stored)."""
    async with engine.connect() as conn:
        return int(
            await conn.scalar(
                select(func.count()).where(
                    InstanceRow.status == "CREATING", InstanceRow.handle.is_not(None)
                )
            )
            or 0
        )


async def settle_launches(engine: AsyncEngine, booting: int) -> int:
    """Wait until all ``booting`` are launched, or their number stops growing for 1 s."""
    last, since = -1, time.perf_counter()
    while time.perf_counter() - since < 1.0:
        now = await launched(engine)
        if now >= booting:
            return now
        if now != last:
            last, since = now, time.perf_counter()
        await asyncio.sleep(0.05)
    return last


async def stop_while_booting(
    server: ServerProcess, url: str, booting: int, args: argparse.Namespace
) -> StopLatency:
    """Bring ``--samples`` instances to RUNNING, create ``booting`` more and let them boot,
    then stop the first ones one at a time, timing each."""
    async with (
        store(url) as engine,
        httpx.AsyncClient(
            base_url=f"{server.url}/v1/{server.project}/demanager/instances",
            headers={"X-Auth-Token": server.token},
            timeout=30.0,
            trust_env=False,
        ) as api,
    ):
        first = []
        for i in range(args.samples):
            response = await api.post("", json={**BODY, "name": f"stop-me-{i}"})
            first.append(response.raise_for_status().json()["id"])
        for instance_id in first:
            if await wait_status(api, instance_id, "RUNNING", args.start_delay + 60, 0.1) is None:
                raise RuntimeError(f"{instance_id} never ran:\n{server.log()}")
        for i in range(booting):
            (await api.post("", json={**BODY, "name": f"boot-{i:03d}"})).raise_for_status()
        result = StopLatency(booting, await settle_launches(engine, booting), [], [], False, 0)
        for instance_id in first:
            began = time.perf_counter()
            stop = await api.post(f"/{instance_id}/action", json={"action": "stop"})
            stop.raise_for_status()
            result.answered.append(time.perf_counter() - began)
            if await wait_status(api, instance_id, "STOPPED", args.stop_timeout, STOP_POLL) is None:
                result.timed_out = True  # the next stops would wait as long: skip them
                break
            result.stopped.append(time.perf_counter() - began)
        result.still_booting = await count(engine, "CREATING")
        return result


def run_stop_latency(args: argparse.Namespace, root: Path, admin_url: str | None) -> None:
    label = "PostgreSQL" if admin_url else "SQLite"
    print(
        f"Stop latency of a RUNNING instance while N instances boot: one replica, "
        f"{args.workers} workers, fake start delay {args.start_delay:g} s, {label}; "
        f"{args.samples} stops one after another, GET every {STOP_POLL * 1000:g} ms",
        flush=True,
    )
    baseline: float | None = None
    for n in args.booting:
        run_root = root / f"stop-{n}"
        with fresh_database(run_root, admin_url) as url:
            server = replica(
                run_root / "replica",
                url,
                secrets.token_hex(32),
                instance_quota=str(n + args.samples + 10),
                workers=str(args.workers),
                fake__start_delay_seconds=str(args.start_delay),
                reconcile_interval_seconds=str(args.sweep_interval),
            )
            try:
                server.start()
                result = asyncio.run(stop_while_booting(server, url, n, args))
            finally:
                server.close()
        figure = ""
        if result.stopped:
            median = statistics.median(result.stopped)
            figure = (
                f"STOPPED after median {median * 1000:7.1f} ms, "
                f"max {max(result.stopped) * 1000:7.1f} ms"
            )
            if n == 0:
                baseline = median
                figure += "  (baseline)"
            elif baseline:
                figure += f"  ({median / baseline:5.1f} x baseline)"
        if result.timed_out:
            figure += f"{', ' if figure else ''}a stop not STOPPED after {args.stop_timeout:g} s"
        print(
            f"  N={n:<4} launched {result.launched:>4}/{n:<4} "
            f"stop answered in {statistics.median(result.answered) * 1000:5.1f} ms, {figure}"
            f"  [{result.still_booting} still booting after]",
            flush=True,
        )
    print("  target: with N=50, STOPPED in under 1 s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--replicas", type=_numbers, default=[1, 2, 3])
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds each throughput phase may take"
    )
    parser.add_argument("--booting", type=_numbers, default=[0, 8, 50, 200])
    parser.add_argument("--start-delay", type=float, default=20.0)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--stop-timeout", type=float, default=60.0)
    parser.add_argument("--samples", type=int, default=5, help="stops timed per N")
    parser.add_argument(
        "--sweep-interval",
        type=float,
        default=2.0,
        help="DEMANAGER_RECONCILE_INTERVAL_SECONDS of the replicas",
    )
    parser.add_argument(
        "--rest-seconds",
        type=float,
        default=10.0,
        help="how long the replicas' CPU is measured with all instances RUNNING",
    )
    parser.add_argument("--part", choices=["all", "throughput", "stop"], default="all")
    args = parser.parse_args()
    admin_url = os.environ.get("DEMANAGER_BENCH_POSTGRES_URL")
    # The replicas get the bench's database, never one of the test helper's own.
    os.environ.pop("DEMANAGER_TEST_POSTGRES_URL", None)
    with tempfile.TemporaryDirectory(prefix="dm-bench-replicas-") as tmp:
        if args.part in ("all", "throughput"):
            run_throughput(args, Path(tmp), admin_url)
        if args.part in ("all", "stop"):
            run_stop_latency(args, Path(tmp), admin_url)
    if not admin_url:
        print("(set DEMANAGER_BENCH_POSTGRES_URL to an admin URL to measure on PostgreSQL)")


def _numbers(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


if __name__ == "__main__":
    main()
