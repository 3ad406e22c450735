"""``/metrics`` against a real server: a known sequence of actions, then exact series.

The server is this module's own (fake backend, the test catalog), so every count it
reports comes from what these tests did. The scrape is parsed with the Prometheus
client's own parser, as Prometheus would read it.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect

from tests.api.helpers import act, create, ok
from tests.conftest import client_for
from tests.server import ServerProcess, wait_for_status

CATALOG = str(Path(__file__).parent.parent / "data" / "catalog.yaml")
SINGLE = "modelarts.vm.cpu.single"
"""A flavor of the test catalog with one slot in the shared pool."""
START_DELAY = 0.3
GAUGE_AGE = 1.1
"""The store's gauges are read at most once a second: wait that long to see a change."""
INSTANCES = "/v1/{project_id}/demanager/instances"
INSTANCE = INSTANCES + "/{instance_id}"
ACTION = INSTANCE + "/action"

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]
AUTH = {"Authorization": "Bearer scrape-secret-1234"}
SCRAPES: Counter[str] = Counter()
"""Successful scrapes so far, per server URL."""


def scrape(server: ServerProcess) -> Series:
    response = httpx.get(f"{server.url}/metrics", headers=AUTH, timeout=10)
    assert response.status_code == 200, response.text
    SCRAPES[server.url] += 1
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    series: Series = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            series[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return series


def value(series: Series, name: str, **labels: str) -> float | None:
    return series.get((name, frozenset(labels.items())))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(
        tmp_path_factory.mktemp("metrics"),
        backend="fake",
        env={
            "DEMANAGER_CATALOG_FILE": CATALOG,
            "DEMANAGER_FAKE__START_DELAY_SECONDS": str(START_DELAY),
            "DEMANAGER_METRICS_TOKEN": "scrape-secret-1234",
        },
    ).start()
    yield proc
    proc.close()


def test_metrics_need_the_token_when_one_is_set(server: ServerProcess) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "scrape-secret-1234"}):
        refused = httpx.get(f"{server.url}/metrics", headers=headers, timeout=10)
        assert refused.status_code == 401
        assert refused.json()["error_code"] == "ModelArts.6620"
        assert "demanager_" not in refused.text


def test_series_after_a_known_sequence(server: ServerProcess) -> None:
    counted: Counter[tuple[str, str, int]] = Counter()
    """Our own requests to the instance routes: (method, route template, status)."""
    project = uuid.uuid4().hex

    def count(response: httpx.Response) -> None:
        path = response.request.url.path.rstrip("/")
        parts = path.split("/")
        route = INSTANCES if len(parts) == 5 else ACTION if parts[-1] == "action" else INSTANCE
        counted[(response.request.method, route, response.status_code)] += 1

    with client_for(server, project=project) as api:
        api.event_hooks["response"] = [count]
        instance = create(api, name="m1", flavor=SINGLE)["id"]
        wait_for_status(api, instance, "RUNNING", timeout=30)
        assert api.get(f"/{uuid.uuid4()}").status_code == 400  # ModelArts.6309

        running = scrape(server)
        assert value(running, "demanager_instances", status="RUNNING", flavor=SINGLE,
                     backend="fake") == 1
        assert value(running, "demanager_capacity_used", pool="", flavor=SINGLE) == 1
        assert value(running, "demanager_capacity_total", pool="", flavor=SINGLE) == 1
        soldout = "modelarts.vm.cpu.soldout"
        assert value(running, "demanager_capacity_total", pool="", flavor=soldout) == 0
        assert value(running, "demanager_start_duration_seconds_count", flavor=SINGLE,
                     backend="fake") == 1
        first_start = value(running, "demanager_start_duration_seconds_sum", flavor=SINGLE,
                            backend="fake")
        assert first_start is not None and START_DELAY <= first_start < 30

        ok(act(api, instance, "stop"))
        wait_for_status(api, instance, "STOPPED", timeout=30)
        time.sleep(GAUGE_AGE)
        stopped = scrape(server)
        assert value(stopped, "demanager_instances", status="STOPPED", flavor=SINGLE,
                     backend="fake") == 1
        assert value(stopped, "demanager_instances", status="RUNNING", flavor=SINGLE,
                     backend="fake") is None
        assert value(stopped, "demanager_capacity_used", pool="", flavor=SINGLE) == 0

        ok(act(api, instance, "start"))
        wait_for_status(api, instance, "RUNNING", timeout=30)
        echo_size = _proxy_traffic(server, instance)

        ok(act(api, instance, "stop"))
        wait_for_status(api, instance, "STOPPED", timeout=30)
        ok(api.delete(f"/{instance}"))
        deadline = time.monotonic() + 30
        while api.get(f"/{instance}").status_code != 400:  # gone: ModelArts.6309
            assert time.monotonic() < deadline, "the instance was never deleted"
            time.sleep(0.1)
        time.sleep(GAUGE_AGE)
        scrapes_before = SCRAPES[server.url]
        series = scrape(server)

    # Deleted instances are not counted; the slot is back.
    assert not [key for key in series if key[0] == "demanager_instances"]
    assert value(series, "demanager_capacity_used", pool="", flavor=SINGLE) == 0
    # Two starts (the create, then the start), each at least the fake backend's delay.
    assert value(series, "demanager_start_duration_seconds_count", flavor=SINGLE,
                 backend="fake") == 2
    total = value(series, "demanager_start_duration_seconds_sum", flavor=SINGLE, backend="fake")
    assert total is not None and 2 * START_DELAY <= total < 60
    # Every request to the instance routes, counted once, by template and status.
    for (method, route, status), n in counted.items():
        assert value(series, "demanager_http_request_duration_seconds_count", method=method,
                     route=route, status=str(status)) == n, (method, route, status)
    assert counted[("POST", INSTANCES, 200)] == 1
    assert counted[("POST", ACTION, 200)] == 3
    assert counted[("GET", INSTANCE, 400)] == 2  # the unknown id, then the deleted one
    # Every scrape before this one (a scrape is counted once it has answered).
    assert value(series, "demanager_http_request_duration_seconds_count", method="GET",
                 route="/metrics", status="200") == scrapes_before
    # No raw path ever becomes a label.
    routes = {dict(labels).get("route") for name, labels in series
              if name == "demanager_http_request_duration_seconds_count"}
    assert all(route is None or "{" in route or not route.startswith("/v1/")
               for route in routes), routes
    # The proxy: exactly the bytes sent and received below, and the socket is closed.
    assert value(series, "demanager_proxy_bytes_total", direction="in") == 123 + 5
    assert value(series, "demanager_proxy_bytes_total", direction="out") == 1000 + 5 + echo_size
    assert value(series, "demanager_proxy_websockets_open") == 0
    # The engine worked, and has nothing left to do.
    reconciles = value(series, "demanager_reconcile_duration_seconds_count")
    assert reconciles is not None and reconciles >= 4
    sweeps = value(series, "demanager_sweep_duration_seconds_count")
    assert sweeps is not None and sweeps >= 1
    assert value(series, "demanager_reconcile_queue_depth") == 0


def _proxy_traffic(server: ServerProcess, instance: str) -> int:
    """123 bytes up and 1000 plus an echo down over HTTP, 5 each way over a WebSocket;
    the echo's size (its JSON varies in length)."""
    base = f"{server.url}/notebooks/{instance}"
    headers = {"X-Auth-Token": server.token, "Accept-Encoding": "identity"}
    with httpx.Client(headers=headers, timeout=10) as client:
        download = client.get(f"{base}/bytes", params={"n": 1000})
        assert download.status_code == 200 and len(download.content) == 1000
        echo = client.post(f"{base}/echo", content=b"x" * 123)
        assert echo.status_code == 200 and echo.json()["body_bytes"] == 123
        echo_size = len(echo.content)
    url = f"ws://127.0.0.1:{server.port}/notebooks/{instance}/api/kernels/k/channels"
    with connect(url, additional_headers={"X-Auth-Token": server.token}) as ws:
        ws.send("hello")
        assert ws.recv() == "hello"
        assert value(scrape(server), "demanager_proxy_websockets_open") == 1
    deadline = time.monotonic() + 10
    while value(scrape(server), "demanager_proxy_websockets_open") != 0:
        assert time.monotonic() < deadline, "the proxy never counted the socket closed"
        time.sleep(0.05)
    return echo_size
