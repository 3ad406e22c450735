"""``create_app(settings)``: the FastAPI application, its middleware and lifespan."""

from __future__ import annotations

import asyncio
import gc
import logging
import re
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from demanager import __version__
from demanager.api import errors
from demanager.api.hardening import harden
from demanager.api.logs import REQUEST_ID
from demanager.api.routes import catalog, events, instances, keystone, ops
from demanager.api.telemetry import RouteTimer
from demanager.engine.runtime import Runtime, upgrade_database
from demanager.proxy.gateway import Gateway, NotebookProxy
from demanager.schemas import instances as w
from demanager.settings import Settings
from demanager.web import console

log = logging.getLogger("demanager")

SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+=-]{0,127}")
"""An ``X-Request-Id`` a caller (or a proxy in front) may choose: kept, so that one id
follows the request through every log; anything else is replaced by our own."""


class ContractPaths:
    """Accept a trailing slash as the same route, answered directly (contract §1.1),
    and stamp every response with an ``X-Request-Id``: the caller's, if sane, else a new
    one; every log line written while the request is served carries it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.host = socket.gethostname()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if len(path) > 1 and path.endswith("/") and path.startswith("/v1/"):
            scope = {**scope, "path": path.rstrip("/") or "/"}
        request_id = _given_request_id(scope) or (
            f"{uuid.uuid4()}-{int(asyncio.get_running_loop().time() * 1000)}-{self.host}"
        )

        async def stamped(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        token = REQUEST_ID.set(request_id)
        try:
            await self.app(scope, receive, stamped)
        finally:
            REQUEST_ID.reset(token)


def _given_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            given = value.decode("latin-1").strip()
            return given if SANE_REQUEST_ID.fullmatch(given) else None
    return None


def create_app(settings: Settings, runtime: Runtime | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        nonlocal runtime
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        await upgrade_database(settings)
        if runtime is None:
            runtime = await Runtime.build(settings)
        app.state.runtime = runtime
        app.state.gateway = Gateway(runtime)
        await runtime.pools.refresh()  # the managed pools are in force from the first request
        runtime.pools.start()
        runtime.reconciler.start()
        if runtime.host_mounts is not None:
            runtime.host_mounts.start()
        log.info("demanager %s serving with the %s backend", __version__, runtime.backend.name)
        # What is built by now lives as long as the server: out of the collector's
        # generations, a full collection no longer walks it. Reads allocate fast enough
        # to run one every few requests, and it walked the whole heap (a quarter of a
        # list request's CPU, docs/benchmarks.md).
        gc.freeze()
        try:
            yield
        finally:
            await app.state.gateway.aclose()
            await runtime.close()

    app = FastAPI(
        title="demanager",
        version=__version__,
        description="ModelArts DevEnviron `demanager` API: notebook development environments.",
        lifespan=lifespan,
        redirect_slashes=False,
    )
    app.add_middleware(NotebookProxy)  # inside ContractPaths: proxied answers get an id too
    harden(app, settings)
    app.add_middleware(
        RouteTimer, access_log=settings.log_format == "json" or settings.log_level == "debug"
    )
    app.add_middleware(ContractPaths)
    errors.install(app)
    app.include_router(instances.router)
    app.include_router(catalog.router)
    app.include_router(keystone.router)
    app.include_router(ops.router)
    app.include_router(events.router)
    console.mount(app)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """The generated document, plus the request bodies the routes parse by hand."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description,
                         routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in (w.InstanceCreate, w.InstanceUpdate, w.ActionRequest):
        body = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(body.pop("$defs", {}))
        components[model.__name__] = body
    _drop_validation_responses(schema)
    schema["components"]["securitySchemes"] = {
        "token": {"type": "apiKey", "in": "header", "name": "X-Auth-Token"}
    }
    schema["security"] = [{"token": []}]
    app.openapi_schema = schema
    return schema


def _drop_validation_responses(schema: dict[str, Any]) -> None:
    """FastAPI documents a 422 for every route with parameters; this server answers
    parameter errors with 400 in the contract's error shape instead (§1.9)."""
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            operation.get("responses", {}).pop("422", None)
    components = schema.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
