"""Domain errors to HTTP answers, through the one table in ``schemas/errors.py``.

Every error body is ``{"error_code": ..., "error_message": ...}`` and nothing
else (contract §1.8); unknown routes and methods answer in the same shape.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from demanager import errors as e
from demanager.api.responses import WireJSON
from demanager.schemas.errors import ERROR_TABLE, INTERNAL, METHOD_NOT_ALLOWED, NOT_FOUND, lookup

log = logging.getLogger("demanager.api")

__all__ = ["ERROR_TABLE", "INTERNAL", "METHOD_NOT_ALLOWED", "NOT_FOUND", "install", "lookup"]

def error_response(status: int, code: str, message: str) -> WireJSON:
    return WireJSON({"error_code": code, "error_message": message}, status_code=status)


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
    if exc.status_code == 405:
        status, code, message = *METHOD_NOT_ALLOWED, "The method is not allowed on this path."
    elif exc.status_code == 404:
        status, code, message = *NOT_FOUND, "The path is not found."
    else:
        status, code, message = *INTERNAL, "The server could not process the request."
    log.info("%s %s -> %s %s", request.method, request.url.path, status, code)
    return error_response(status, code, message)


async def _validation_error(request: Request, exc: Exception) -> WireJSON:
    # Bodies are parsed by hand; this only catches path/query shapes FastAPI checks itself.
    log.info("%s %s -> 400: %s", request.method, request.url.path, exc)
    return error_response(400, "ModelArts.6600", "A parameter failed verification.")


def install(app: FastAPI) -> None:
    app.add_exception_handler(e.DemanagerError, _domain_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _domain_error)
