"""Reading a page of instances: one JSON array per row against one value per column.

The API reads an instance as ``row_json(...)`` (``store/rowjson.py``): the database
builds one JSON array of the row's columns and the driver hands over one string. This
times, on the same database and rows, fetching a page of ``--page`` instances that way
and as plain columns, and prints each and their ratio. SQLite always; PostgreSQL too
when ``DEMANAGER_TEST_POSTGRES_URL`` names a server (admin URL). The time is the
caller's wall clock, so it holds the database's own work: on PostgreSQL, building the
JSON is the server's job, and that is what this weighs against the driver's.

    .venv/bin/python bench/rowjson.py [--instances 1000] [--page 200] [--rounds 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.remove(str(Path(__file__).resolve().parent))  # bench/queue.py would shadow queue
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson
from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncEngine
from tests.server import TestDatabase
from tests.unit.stored import CATALOG, instance

from demanager.domain.instance import AutoStop, ProjectId
from demanager.domain.lifecycle import InstanceStatus
from demanager.store import instances as stored_instances
from demanager.store.database import make_engine, make_sessionmaker, upgrade
from demanager.store.instances import InstanceRepository

TABLE = stored_instances._TABLE
AS_JSON = select(stored_instances._SOURCE).where(
    TABLE.c.id.in_(bindparam("ids", expanding=True)))
AS_COLUMNS = select(*stored_instances._SOURCE_COLUMNS).where(
    TABLE.c.id.in_(bindparam("ids", expanding=True)))


async def fill(engine: AsyncEngine, count: int) -> list[str]:
    repo = InstanceRepository(make_sessionmaker(engine), CATALOG)
    ids = []
    for n in range(1, count + 1):
        made = instance(
            n, project_id=ProjectId("p"), status=InstanceStatus.RUNNING,
            annotations={"url": f"http://127.0.0.1/notebooks/DE-{n}/", "n": str(n)},
            auto_stop=AutoStop(enable=True, duration=3600, prompt=True),
            description=f"notebook number {n} of the benchmark",
        )
        await repo.add(made, project_quota=10**6, flavor_quota=None)
        ids.append(made.id)
    return ids


async def timed(engine: AsyncEngine, read: Callable[[Any], Awaitable[None]],
                rounds: int) -> float:
    """Milliseconds per page, the best of three runs of ``rounds`` pages."""
    best = float("inf")
    async with engine.connect() as conn:
        for _ in range(10):  # warm-up: statement caches, the database's own buffers
            await read(conn)
        for _ in range(3):
            began = time.perf_counter()
            for _ in range(rounds):
                await read(conn)
            best = min(best, (time.perf_counter() - began) / rounds * 1000)
    return best


async def compare(store: str, url: str, args: argparse.Namespace) -> None:
    await asyncio.to_thread(upgrade, url)
    engine = make_engine(url)
    try:
        ids = await fill(engine, args.instances)
        page = ids[: args.page]

        async def as_json(conn: Any) -> None:
            rows = (await conn.execute(AS_JSON, {"ids": page})).all()
            for row in rows:
                orjson.loads(row[0])  # what a remembered instance's key is built from

        async def as_columns(conn: Any) -> None:
            rows = (await conn.execute(AS_COLUMNS, {"ids": page})).all()
            for row in rows:
                tuple(row)

        json_ms = await timed(engine, as_json, args.rounds)
        columns_ms = await timed(engine, as_columns, args.rounds)
        print(f"{store:<10} page of {args.page}: one JSON array a row {json_ms:6.2f} ms, "
              f"one value a column {columns_ms:6.2f} ms, "
              f"columns / JSON {columns_ms / json_ms:4.2f}x")
    finally:
        await engine.dispose()


async def main(args: argparse.Namespace) -> None:
    print(f"{args.instances} instances, pages of {args.page} read {args.rounds} times "
          f"(best of 3)")
    with tempfile.TemporaryDirectory() as folder:
        await compare("sqlite", f"sqlite+aiosqlite:///{folder}/rowjson.db", args)
    if os.environ.get("DEMANAGER_TEST_POSTGRES_URL"):
        database = await asyncio.to_thread(TestDatabase)
        try:
            assert database.url is not None
            await compare("postgresql", database.url, args)
        finally:
            await asyncio.to_thread(database.drop)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--page", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=200)
    asyncio.run(main(parser.parse_args()))
