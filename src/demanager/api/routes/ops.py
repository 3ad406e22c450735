"""Operations: liveness, readiness and Prometheus metrics, outside the contract's ``/v1``.

None of them takes a project token: probes and scrapers are not users. ``/metrics``
carries counts by status, flavor and pool (no project, user or instance names); an
operator who exposes the API publicly can require a bearer token for it
(``DEMANAGER_METRICS_TOKEN``), which Prometheus sends with ``authorization``.
"""

from __future__ import annotations

import hmac
import logging

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client.exposition import choose_encoder

from demanager import errors
from demanager.api.dependencies import RuntimeDep
from demanager.api.errors import error_response, lookup

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)


@router.get("/healthz")
async def healthz() -> JSONResponse:
    """The process is alive and its event loop turns: no I/O at all."""
    return JSONResponse({"status": "ok"}, headers={"Cache-Control": "no-store"})


@router.get("/readyz")
async def readyz(runtime: RuntimeDep) -> JSONResponse:
    report = await runtime.readiness.check()
    return JSONResponse(
        {"status": "ready" if report.ready else "not ready", "checks": report.checks},
        status_code=200 if report.ready else 503,
        headers={"Cache-Control": "no-store"},
    )


@router.get("/metrics")
async def metrics(request: Request, runtime: RuntimeDep) -> Response:
    expected = runtime.settings.metrics_token
    if expected and not _bearer_matches(request.headers.get("authorization"), expected):
        missing = errors.TokenInvalid()
        status, code = lookup(missing)
        return error_response(status, code, "The metrics token is missing or wrong.",
                              headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
    try:
        await runtime.gauges.refresh()
    except Exception as exc:
        # The counters are still worth having; the store's gauges stay as last read.
        log.warning("metrics: reading the store failed: %s", type(exc).__name__)
    # The text format Prometheus has always read, or OpenMetrics when the scraper asks.
    encode, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(
        encode(runtime.metrics.registry),
        headers={"Content-Type": content_type, "Cache-Control": "no-store"},
    )


def _bearer_matches(header: str | None, expected: str) -> bool:
    scheme, _, value = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        value.strip().encode(), expected.encode()
    )
