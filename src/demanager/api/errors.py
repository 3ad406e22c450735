"""The one table from domain errors to HTTP status and ``ModelArts.xxxx`` code.

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

log = logging.getLogger("demanager.api")

#: Looked up along the exception's MRO, most specific class first.
ERROR_TABLE: dict[type[Exception], tuple[int, str]] = {
    e.InvalidPayload: (400, "ModelArts.6400"),
    e.MissingField: (400, "ModelArts.6335"),
    e.WrongType: (400, "ModelArts.6332"),
    e.ForbiddenCharacter: (400, "ModelArts.6334"),
    e.InvalidValue: (400, "ModelArts.6336"),
    e.UnknownWorkspace: (400, "ModelArts.0102"),
    e.PoolInitialising: (400, "ModelArts.6355"),
    e.UnknownFlavor: (400, "ModelArts.6323"),
    e.FlavorNotPermitted: (400, "ModelArts.6328"),
    e.FlavorTypeMismatch: (400, "ModelArts.6330"),
    e.StorageRequired: (400, "ModelArts.6316"),
    e.UnsupportedStorage: (400, "ModelArts.6324"),
    e.PathRequired: (400, "ModelArts.6317"),
    e.PathNeedsSlash: (400, "ModelArts.6318"),
    e.PathIsBucketRoot: (400, "ModelArts.6358"),
    e.VolumeSizeOutOfRange: (400, "ModelArts.6331"),
    e.DurationRequired: (400, "ModelArts.6348"),
    e.DurationOutOfRange: (400, "ModelArts.6349"),
    e.ImmutableField: (400, "ModelArts.6347"),
    e.InvalidSortField: (400, "ModelArts.6303"),
    e.RequestError: (400, "ModelArts.6600"),
    e.NameTaken: (400, "ModelArts.6301"),
    e.InstanceQuotaReached: (400, "ModelArts.6302"),
    e.FlavorQuotaReached: (400, "ModelArts.0118"),
    e.FlavorSoldOut: (400, "ModelArts.6329"),
    e.NotEnoughResources: (400, "ModelArts.6360"),
    e.StopBeforeDelete: (400, "ModelArts.6304"),
    e.AlreadyRunning: (400, "ModelArts.6305"),
    e.InstanceStarting: (400, "ModelArts.6306"),
    e.AlreadyStopped: (400, "ModelArts.6307"),
    e.InstanceStopping: (400, "ModelArts.6308"),
    e.NotRunning: (400, "ModelArts.6327"),
    e.BeingRestored: (400, "ModelArts.6333"),
    e.OperationNotAllowed: (400, "ModelArts.6357"),
    e.InstanceFrozen: (400, "ModelArts.6326"),
    e.ConflictError: (400, "ModelArts.6357"),
    e.InstanceNotFound: (400, "ModelArts.6309"),
    e.TokenMissing: (401, "ModelArts.0201"),
    e.TokenExpired: (401, "ModelArts.0202"),
    e.TokenInvalid: (401, "ModelArts.6620"),
    e.TokenWithoutProject: (401, "ModelArts.0212"),
    e.UserUnavailable: (401, "ModelArts.6608"),
    e.LoginFailed: (401, "ModelArts.6620"),
    e.ProjectMismatch: (403, "ModelArts.0210"),
    e.Busy: (429, "ModelArts.6101"),
}

INTERNAL = (500, "ModelArts.6102")
NOT_FOUND = (404, "ModelArts.2836")
METHOD_NOT_ALLOWED = (405, "ModelArts.2803")
#: The contract has no 413 code; 6400 is its code for a body that is "too large" (§7.2),
#: answered with the status HTTP has for it so that clients and proxies can tell.
PAYLOAD_TOO_LARGE = (413, "ModelArts.6400")
RATE_LIMITED = (429, "ModelArts.6101")


def lookup(exc: Exception) -> tuple[int, str]:
    for cls in type(exc).__mro__:
        if cls in ERROR_TABLE:
            return ERROR_TABLE[cls]
    return INTERNAL


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
