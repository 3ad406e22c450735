"""The server's Prometheus metrics, defined once, in a registry of each server's own.

Instruments fall in two kinds. Events are counted where they happen: the API's
latency per route template, the start duration (observed when the engine marks an
instance RUNNING), the reconciler's passes, the notebook proxy's bytes and open
WebSockets. State is read from the store when scraped: instances per status and
flavor, and the capacity used and offered per pool and flavor; ``StoreGauges``
reads it at most once a second, so scrapes by several Prometheus servers cost the
database two short queries a second at most.

Each ``demanager serve`` is one process (uvicorn runs no worker processes), so every
process exports its own figures; replicas are scraped one by one and summed in
Prometheus, which labels each by its ``instance``. A registry per ``Metrics`` rather
than the client's global one lets tests build many servers in one process.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.ext.asyncio import AsyncEngine

from demanager.domain.catalog import Catalog
from demanager.store import stats

START_BUCKETS: Final = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
"""A notebook's start: a fake one in milliseconds, JupyterLab in seconds, an image pull
in minutes."""
FAST_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)
"""API requests and reconcile passes: milliseconds normally, seconds when a backend
call (a launch, a container stop) is part of the pass."""

OTHER_ROUTE: Final = "other"
"""The route label of a request no route matched (bounded: never the raw path)."""


class Metrics:
    """Every instrument of one server, in its own registry."""

    def __init__(self, backend: str = "") -> None:
        self.backend = backend
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.http_requests = Histogram(
            "demanager_http_request_duration_seconds",
            "API requests by method, route template and status code, until the answer's "
            "start is sent.",
            ["method", "route", "status"],
            buckets=FAST_BUCKETS,
            registry=r,
        )
        self.start_duration = Histogram(
            "demanager_start_duration_seconds",
            "From a workload's launch to the engine marking its instance RUNNING.",
            ["flavor", "backend"],
            buckets=START_BUCKETS,
            registry=r,
        )
        self.reconcile_duration = Histogram(
            "demanager_reconcile_duration_seconds",
            "One instance's reconcile (observe, plan, act until it rests or waits).",
            buckets=FAST_BUCKETS,
            registry=r,
        )
        self.sweep_duration = Histogram(
            "demanager_sweep_duration_seconds",
            "One sweep: the heartbeat and the query for instances needing work.",
            buckets=FAST_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "demanager_reconcile_queue_depth",
            "Instances being reconciled or waiting on a timer to be reconciled again.",
            registry=r,
        )
        self.proxy_bytes = Counter(
            "demanager_proxy_bytes",
            "Bytes the notebook proxy relayed: in from callers, out to callers (HTTP "
            "bodies and WebSocket messages).",
            ["direction"],
            registry=r,
        )
        self.proxy_websockets = Gauge(
            "demanager_proxy_websockets_open",
            "WebSocket connections the notebook proxy relays now.",
            registry=r,
        )
        self.policy_actions = Counter(
            "demanager_policy_actions",
            "What the lifecycle policy did: a stop warned of, or a run stopped, by reason "
            "(auto_stop, idle, max_lifetime).",
            ["action", "reason"],
            registry=r,
        )
        for direction in ("in", "out"):
            self.proxy_bytes.labels(direction)  # present at zero from the start

    def watch_queue(self, depth: Callable[[], int]) -> None:
        """Read the work queue's depth at each scrape."""
        self.queue_depth.set_function(lambda: float(depth()))

    def observe_start(self, flavor: str, seconds: float) -> None:
        self.start_duration.labels(flavor, self.backend).observe(max(0.0, seconds))


class StoreGauges(Collector):
    """Instances and capacity as the store has them, read before a scrape (``refresh``)
    and reported by ``collect`` from that snapshot: the client's collectors are called
    synchronously, the store is asynchronous."""

    def __init__(
        self,
        engine: AsyncEngine,
        catalog: Catalog,
        backend: str,
        *,
        max_age: float = 1.0,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engine = engine
        self._catalog = catalog
        self._backend = backend
        self._max_age = max_age
        self._now = now
        self._read_at: float | None = None
        self._instances: dict[tuple[str, str], int] = {}
        self._used: dict[tuple[str, str], int] = {}

    async def refresh(self) -> None:
        """Read the store again unless the last read is younger than ``max_age``."""
        now = self._now()
        if self._read_at is not None and now - self._read_at < self._max_age:
            return
        self._instances = await stats.instances_by_status(self._engine)
        self._used = await stats.capacity_used(self._engine)
        self._read_at = now

    def capacity_total(self) -> dict[tuple[str, str], int]:
        """Slots offered per (pool id, flavor); only limited ones (the shared pool's
        flavors with a ``capacity``, and each dedicated pool's entries)."""
        total = {
            ("", name): flavor.capacity
            for name, flavor in self._catalog.flavors.items()
            if flavor.capacity is not None
        }
        for pool in self._catalog.pools.values():
            total.update(((pool.id, flavor), slots) for flavor, slots in pool.capacity.items())
        return total

    def collect(self) -> Iterator[Metric]:
        instances = GaugeMetricFamily(
            "demanager_instances",
            "Instances (deleted ones aside) by status, flavor and backend.",
            labels=["status", "flavor", "backend"],
        )
        for (status, flavor), count in sorted(self._instances.items()):
            instances.add_metric([status, flavor, self._backend], count)
        yield instances
        total = self.capacity_total()
        used = GaugeMetricFamily(
            "demanager_capacity_used",
            "Instances holding resources per pool (empty: the shared pool) and flavor.",
            labels=["pool", "flavor"],
        )
        for (pool, flavor), count in sorted({**dict.fromkeys(total, 0), **self._used}.items()):
            used.add_metric([pool, flavor], count)
        yield used
        offered = GaugeMetricFamily(
            "demanager_capacity_total",
            "Instances that may hold resources at once per pool and flavor (limited ones).",
            labels=["pool", "flavor"],
        )
        for (pool, flavor), slots in sorted(total.items()):
            offered.add_metric([pool, flavor], slots)
        yield offered
