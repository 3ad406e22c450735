"""Domain errors to HTTP answers, through the one table in ``schemas/errors.py``.

Every error body is ``{"error_code": ..., "error_message": ...}`` and nothing
else (contract §1.8); unknown routes and methods answer in the same shape.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from demanager import errors as e
from demanager.api.responses import WireJSON
from demanager.schemas.errors import (
    ERROR_TABLE,
    INTERNAL,
    METHOD_NOT_ALLOWED,
    NOT_FOUND,
    PAYLOAD_TOO_LARGE,
    RATE_LIMITED,
    lookup,
)

log = logging.getLogger("demanager.api")

__all__ = [
    "ERROR_TABLE", "INTERNAL", "METHOD_NOT_ALLOWED", "NOT_FOUND", "PAYLOAD_TOO_LARGE",
    "RATE_LIMITED", "install", "lookup",
]

def error_response(status: int, code: str, message: str,
                   headers: dict[str, str] | None = None) -> WireJSON:
    return WireJSON({"error_code": code, "error_message": message}, status_code=status,
                    headers=headers)


#: The methods a 405's ``Allow`` may name.
HTTP_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def allowed_methods(request: Request) -> str:
    """Every method the app routes for the request's path (RFC 9110 ``Allow``).

    Starlette's own 405 names the methods of the first route that matched the path
    only, one of several; so each method is tried against the routing table instead
    (through ``matches``, the one question every kind of route answers)."""
    routes = request.app.router.routes
    allowed = [
        method for method in HTTP_METHODS
        if any(route.matches({**request.scope, "method": method})[0] is Match.FULL
               for route in routes)
    ]
    return ", ".join(allowed)


async def _domain_error(request: Request, exc: Exception) -> WireJSON:
    status, code = lookup(exc)
    message = exc.message if isinstance(exc, e.DemanagerError) else "Internal error."
    if status >= 500:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        message = "The server could not process the request."
    else:
        log.info("%s %s -> %s %s: %s", request.method, request.url.path, status, code, message)
    return error_response(status, code, message)


async def _http_error(request: Request, exc: Exception) -> WireJSON:
    assert isinstance(exc, StarletteHTTPException)
    headers = None
    if exc.status_code == 405:
        status, code, message = *METHOD_NOT_ALLOWED, "The method is not allowed on this path."
        headers = {"Allow": allowed_methods(request)}
    elif exc.status_code == 404:
        status, code, message = *NOT_FOUND, "The path is not found."
    else:
        status, code, message = *INTERNAL, "The server could not process the request."
    log.info("%s %s -> %s %s", request.method, request.url.path, status, code)
    return error_response(status, code, message, headers)


async def _validation_error(request: Request, exc: Exception) -> WireJSON:
    # Bodies are parsed by hand; this only catches path/query shapes FastAPI checks itself.
    log.info("%s %s -> 400: %s", request.method, request.url.path, exc)
    return error_response(400, "ModelArts.6600", "A parameter failed verification.")


def install(app: FastAPI) -> None:
    app.add_exception_handler(e.DemanagerError, _domain_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _domain_error)
