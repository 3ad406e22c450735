"""Health probes, JSON logs and a graceful shutdown, on real server processes."""

from __future__ import annotations

import json
import signal
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from alembic import command

from demanager.store.database import alembic_config
from tests.api.helpers import FREE_FLAVOR, create, ok
from tests.conftest import client_for
from tests.server import OPERATOR_TOKEN, ServerProcess, wait_for_status

SECRET_KEY = "known-secret-key-0123456789"
METRICS_TOKEN = "known-metrics-token-9876"


@pytest.fixture(scope="module")
def json_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(
        tmp_path_factory.mktemp("operations"),
        backend="fake",
        env={
            "DEMANAGER_LOG_FORMAT": "json",
            "DEMANAGER_SECRET_KEY": SECRET_KEY,
            "DEMANAGER_METRICS_TOKEN": METRICS_TOKEN,
        },
    ).start()
    yield proc
    proc.close()


def test_healthz_and_readyz_answer_at_once(json_server: ServerProcess) -> None:
    with httpx.Client(base_url=json_server.url, timeout=10) as client:
        for _ in range(3):  # the first answers warm the connection
            began = time.perf_counter()
            alive = client.get("/healthz")
            alive_ms = (time.perf_counter() - began) * 1000
            began = time.perf_counter()
            ready = client.get("/readyz")
            ready_ms = (time.perf_counter() - began) * 1000
    assert alive.status_code == 200 and alive.json() == {"status": "ok"}
    assert ready.status_code == 200, ready.text
    assert ready.json() == {
        "status": "ready", "checks": {"database": "ok", "migrations": "ok", "backend": "ok"},
    }
    # Generous bounds for a loaded CI machine; the answers take milliseconds.
    assert alive_ms < 500 and ready_ms < 1000, (alive_ms, ready_ms)


@pytest.mark.skipif(
    bool(__import__("os").environ.get("DEMANAGER_TEST_POSTGRES_URL")),
    reason="downgrades the server's SQLite file in place",
)
def test_readyz_fails_while_the_database_is_behind(json_server: ServerProcess) -> None:
    url = f"sqlite+aiosqlite:///{json_server.data_dir / 'demanager.db'}"
    command.downgrade(alembic_config(url), "-1")
    try:
        deadline = time.monotonic() + 10
        while (answer := httpx.get(f"{json_server.url}/readyz", timeout=10)).status_code == 200:
            assert time.monotonic() < deadline, "readyz never noticed the downgrade"
            time.sleep(0.1)
        assert answer.status_code == 503
        body = answer.json()
        assert body["status"] == "not ready"
        assert body["checks"]["database"] == "ok"
        assert "this release needs" in body["checks"]["migrations"]
        assert httpx.get(f"{json_server.url}/healthz", timeout=10).status_code == 200
    finally:
        command.upgrade(alembic_config(url), "head")
    assert httpx.get(f"{json_server.url}/readyz", timeout=10).status_code == 200


@pytest.mark.skipif(
    not __import__("os").environ.get("DEMANAGER_TEST_POSTGRES_URL"),
    reason="needs a PostgreSQL server whose database can be closed to the server",
)
def test_readyz_fails_while_the_database_is_gone(json_server: ServerProcess) -> None:
    database = json_server.database
    database._execute(f'ALTER DATABASE "{database.name}" ALLOW_CONNECTIONS false')
    database._execute(
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database.name}'"
    )
    try:
        answer = httpx.get(f"{json_server.url}/readyz", timeout=10)
        assert answer.status_code == 503, answer.text
        checks = answer.json()["checks"]
        assert checks["database"].startswith("unreachable (")
        assert "@" not in checks["database"] and "postgres" not in checks["database"]
        assert httpx.get(f"{json_server.url}/healthz", timeout=10).status_code == 200
        # The counters are still served; the store's gauges stay as last read.
        metrics = httpx.get(f"{json_server.url}/metrics", timeout=10,
                            headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        assert metrics.status_code == 200 and "demanager_reconcile_queue_depth" in metrics.text
    finally:
        database._execute(f'ALTER DATABASE "{database.name}" ALLOW_CONNECTIONS true')
    deadline = time.monotonic() + 10
    while httpx.get(f"{json_server.url}/readyz", timeout=10).status_code != 200:
        assert time.monotonic() < deadline, "readyz never recovered"
        time.sleep(0.1)


def test_json_logs_carry_request_ids_and_no_secret(json_server: ServerProcess) -> None:
    project = uuid.uuid4().hex
    with client_for(json_server, project=project) as api:
        given = api.get("", params={"de_type": "Notebook"}, headers={"X-Request-Id": "trace-42"})
        assert given.status_code == 200 and given.headers["x-request-id"] == "trace-42"
        # Not a sane id (a space, a quote): replaced by the server's own.
        odd = api.get("", params={"de_type": "Notebook"}, headers={"X-Request-Id": 'a "b'})
        own = odd.headers["x-request-id"]
        assert own and own != 'a "b'
        # Secrets offered every way a caller can: none may reach the log.
        notebook = f"{json_server.url}/notebooks/{uuid.uuid4()}/lab?token=dmg_{SECRET_KEY}"
        httpx.get(notebook, headers={"Authorization": f"Bearer {SECRET_KEY}"}, timeout=10)
        httpx.get(f"{json_server.url}/metrics", timeout=10,
                  headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        create(api, name="logged", flavor=FREE_FLAVOR)
    deadline = time.monotonic() + 10
    while "trace-42" not in json_server.log_path.read_text() or own not in (
        json_server.log_path.read_text()
    ):
        assert time.monotonic() < deadline, json_server.log()
        time.sleep(0.1)
    text = json_server.log_path.read_text()
    entries = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert all({"time", "level", "logger", "message"} <= set(entry) for entry in entries)
    access = [e for e in entries if e["logger"] == "demanager.access"]
    traced = [e for e in access if e.get("request_id") == "trace-42"]
    assert len(traced) == 1
    assert traced[0]["route"] == "/v1/{project_id}/demanager/instances"
    assert traced[0]["status"] == 200 and traced[0]["method"] == "GET"
    assert any(e.get("request_id") == own for e in access)
    assert any(e["message"].startswith("demanager serving at") for e in entries)
    for secret in (SECRET_KEY, METRICS_TOKEN, OPERATOR_TOKEN):
        assert secret not in text
    assert project not in text  # routes are templates: no raw path is logged


def test_sigterm_finishes_transitions_and_leaves_notebooks_running(tmp_path: Path) -> None:
    """A server stopped while one notebook runs and another boots exits promptly; the
    next server finds the first still running and the second's launch finished, neither
    launched again."""
    state = tmp_path / "workloads"
    env = {"DEMANAGER_FAKE__STATE_DIR": str(state), "DEMANAGER_SHUTDOWN_GRACE_SECONDS": "5"}
    project = uuid.uuid4().hex
    first = ServerProcess(tmp_path / "one", backend="fake",
                          env={**env, "DEMANAGER_FAKE__START_DELAY_SECONDS": "4"}).start()
    second: ServerProcess | None = None
    try:
        with client_for(first, project=project) as api:
            running = create(api, name="running")["id"]
            wait_for_status(api, running, "RUNNING", timeout=30)
            booting = create(api, name="booting")["id"]
            deadline = time.monotonic() + 10
            while not _launches(state, booting):
                assert time.monotonic() < deadline, "the second notebook was never launched"
                time.sleep(0.05)
        assert first.proc is not None
        began = time.monotonic()
        first.proc.send_signal(signal.SIGTERM)
        # Uvicorn shuts down, then ends the process with the signal it was sent.
        assert first.proc.wait(timeout=30) in (0, -signal.SIGTERM)
        assert time.monotonic() - began < 15
        first.proc = None
        assert "Application shutdown complete" in first.log()
        second = ServerProcess(tmp_path / "two", backend="fake", env={
            **env, "DEMANAGER_DATA_DIR": str(first.data_dir),
            **({"DEMANAGER_DATABASE_URL": first.database.url} if first.database.url else {}),
        }, database=first.database).start()
        with client_for(second, project=project) as api:
            wait_for_status(api, booting, "RUNNING", timeout=30)
            assert ok(api.get(f"/{running}"))["status"] == "RUNNING"
    finally:
        if second is not None:
            second.stop()
        first.close()
    assert _launches(state, running) == 1
    assert _launches(state, booting) == 1


def _launches(state: Path, instance_id: str) -> int:
    files = list(state.glob("*.db")) + list(state.glob("*.sqlite*"))
    for path in files:
        with sqlite3.connect(path) as conn:
            try:
                row = conn.execute(
                    "SELECT count(*) FROM launches WHERE instance_id = ?", (instance_id,)
                ).fetchone()
            except sqlite3.OperationalError:
                continue
            return int(row[0])
    return 0
