"""Operations without a server: the dashboard's queries, log redaction, readiness
checks, and the work queue's shutdown."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from demanager.api.logs import (
    REDACTED,
    REQUEST_ID,
    JsonFormatter,
    Redactor,
    RequestIdFilter,
    TextFormatter,
)
from demanager.catalog import load_catalog
from demanager.engine import health
from demanager.engine.health import Readiness
from demanager.engine.metrics import Metrics, StoreGauges
from demanager.engine.workqueue import KeyedWorkQueue

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "demanager.json"
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count",
                                                            "_created")}


def exported_names() -> set[str]:
    """Every sample name the server's registry can export."""
    metrics = Metrics("fake")
    engine = create_async_engine("sqlite+aiosqlite://")
    metrics.registry.register(StoreGauges(engine, load_catalog(None), "fake"))
    names = set()
    for family in metrics.registry.collect():
        names.add(family.name)
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ()))
    return names


def test_every_dashboard_query_names_an_exported_metric() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exported = exported_names()
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    queries += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    assert len(queries) >= 12
    for query in queries:
        named = set(re.findall(r"\bdemanager_[a-z_]+\b", query))
        assert named, query
        assert named <= exported, (query, named - exported)
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["title"] and set(panel["gridPos"]) == {"x", "y", "w", "h"}
        assert panel["datasource"]["uid"] == "${datasource}"
    # Every instrument is on the dashboard.
    families = {name for name in exported if not name.endswith(("_created", "_bucket", "_sum"))}
    shown = set(re.findall(r"\bdemanager_[a-z_]+\b", " ".join(queries)))
    missing = {name for name in families
               if not any(s == name or s.startswith(name.removesuffix("_count").removesuffix(
                   "_total")) for s in shown)}
    assert not missing, missing


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter(Redactor(["known-secret-value-1"])))
    logger = logging.getLogger("demanager.test.redaction")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_no_secret_reaches_any_field(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    secret = "known-secret-value-1"
    token = REQUEST_ID.set("req-7")
    try:
        logger.info("key is %s", secret)
        logger.info("headers %s", {"Authorization": "Bearer abc.def.ghi", "X-Auth-Token": "t0k3n"})
        logger.info("url postgresql+asyncpg://demanager:hunter2pw@db:5432/demanager")
        logger.info("link /notebooks/x/lab?token=dmg_e30.c2lnbmF0dXJl&x=1")
        logger.info("a user token dmt_Abcdefghijklmnop in passing")
        logger.info("fields", extra={"password": "pw-123456", "detail": f"with {secret} inside",
                                     "count": 3})
        try:
            raise RuntimeError(f"failed with secret_key={secret}")
        except RuntimeError:
            logger.exception("boom")
    finally:
        REQUEST_ID.reset(token)
    text = stream.getvalue()
    for leaked in (secret, "abc.def.ghi", "t0k3n", "hunter2pw", "c2lnbmF0dXJl",
                   "Abcdefghijklmnop", "pw-123456"):
        assert leaked not in text, leaked
    entries = lines(stream)
    assert all(entry["request_id"] == "req-7" for entry in entries)
    assert entries[0]["message"] == f"key is {REDACTED}"
    assert "Bearer [redacted]" in entries[1]["message"]
    assert "demanager:[redacted]@db:5432" in entries[2]["message"]
    assert entries[5]["password"] == REDACTED and entries[5]["count"] == 3
    assert "RuntimeError" in entries[6]["exception"]
    assert {"time", "level", "logger", "message"} <= set(entries[0])


def test_lines_outside_requests_have_no_request_id(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    logger.warning("sweep failed")
    (entry,) = lines(stream)
    assert "request_id" not in entry and entry["level"] == "warning"


def test_text_lines_carry_the_request_id_and_no_secret() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(TextFormatter(Redactor(["known-secret-value-2"])))
    logger = logging.getLogger("demanager.test.text")
    logger.addHandler(handler)
    logger.propagate = False
    token = REQUEST_ID.set("req-8")
    try:
        logger.warning("refused known-secret-value-2 from X-Auth-Token: dmo_abcdefgh12345")
    finally:
        REQUEST_ID.reset(token)
        logger.removeHandler(handler)
    line = stream.getvalue()
    assert line.rstrip().endswith("[request req-8]")
    assert "known-secret-value-2" not in line and "abcdefgh12345" not in line
    assert "WARNING demanager.test.text: refused [redacted]" in line


class _Backend:
    name = "stub"

    def __init__(self, delay: float = 0.0, error: Exception | None = None) -> None:
        self.delay = delay
        self.error = error
        self.calls = 0

    async def observe(self, instance_id: str, handle: object) -> None:
        self.calls += 1
        await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error


async def test_readiness_says_what_is_wrong(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(health, "BACKEND_TIMEOUT", 0.05)
    gone = create_async_engine(f"sqlite+aiosqlite:///{tmp_path}/missing/dir/db.sqlite")
    hanging = _Backend(delay=5)
    try:
        report = await Readiness(gone, hanging).check()  # type: ignore[arg-type]
    finally:
        await gone.dispose()
    assert not report.ready
    assert report.checks["database"] == "unreachable (OperationalError)"
    assert report.checks["migrations"] == "unknown"
    assert report.checks["backend"] == "the stub backend did not answer within 0.05 s"


async def test_readiness_reuses_the_backends_answer_briefly(tmp_path: Path) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path}/db.sqlite")
    now = [0.0]
    backend = _Backend(error=RuntimeError("daemon down"))
    readiness = Readiness(engine, backend, now=lambda: now[0])  # type: ignore[arg-type]
    try:
        first = await readiness.check()
        second = await readiness.check()
        now[0] += health.BACKEND_CACHE_SECONDS + 0.1
        await readiness.check()
    finally:
        await engine.dispose()
    assert first.checks["backend"] == "the stub backend failed (RuntimeError)"
    assert second.checks == first.checks
    assert backend.calls == 2
    # A database without the schema: reachable, but no migration applied.
    assert first.checks["database"] == "ok"
    assert first.checks["migrations"].startswith("the database is at none; this release needs")


async def test_a_closed_queue_lets_running_work_finish_and_takes_no_more() -> None:
    release = asyncio.Event()
    done: list[str] = []

    async def work(key: str) -> None:
        await release.wait()
        done.append(key)

    queue = KeyedWorkQueue(work, concurrency=4)
    queue.submit("a")
    queue.submit_after("b", 60)  # a timer: holds no work, dropped at close
    await asyncio.sleep(0)
    queue.close()
    queue.submit("c")
    queue.submit_after("d", 0)
    assert queue.pending() == 1
    draining = asyncio.create_task(queue.drain())
    await asyncio.sleep(0.01)
    assert not draining.done()
    release.set()
    await asyncio.wait_for(draining, 1)
    assert done == ["a"]
