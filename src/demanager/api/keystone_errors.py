"""Errors under ``/v3`` in Keystone's shape, ``{"error": {"code", "title", "message"}}``.

OpenStack clients (keystoneauth, openstacksdk) parse that shape, so the
Keystone-compatible routes speak it while ``/v1`` keeps the contract's
``error_code``/``error_message`` (``api/errors.py``). A route class rather than an
application-wide handler keeps the two dialects apart: only routes declared with
``KeystoneRoute`` answer this way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from http import HTTPStatus
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import ValidationError

from demanager import errors as e
from demanager.api.responses import WireJSON

log = logging.getLogger("demanager.api")

#: Looked up along the exception's MRO, most specific class first.
KEYSTONE_STATUS: dict[type[Exception], int] = {
    e.RequestError: 400,
    e.LoginThrottled: 429,
    e.TokenNotFound: 404,
    e.AuthError: 401,
    e.ProjectMismatch: 401,
    e.Busy: 503,
}

GENERIC_401 = "The request you have made requires authentication."
"""What every credential failure says: naming the reason would tell a guesser which
user names exist."""


def status_of(exc: Exception) -> int:
    for cls in type(exc).__mro__:
        if cls in KEYSTONE_STATUS:
            return KEYSTONE_STATUS[cls]
    return 500


def keystone_error(status: int, message: str, headers: dict[str, str] | None = None
                   ) -> WireJSON:
    title = HTTPStatus(status).phrase
    body = {"error": {"code": status, "title": title, "message": message}}
    return WireJSON(body, status_code=status, headers=headers)


def response_for(request: Request, exc: Exception) -> WireJSON:
    if isinstance(exc, RequestValidationError | ValidationError):
        # Never the input itself: it may hold a password.
        problems = exc.errors()
        first: dict[str, Any] = dict(problems[0]) if problems else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        what = first.get("msg", "invalid")
        message = (f"Invalid input for field '{where}': {what}." if where
                   else f"Invalid request body: {what}.")
        status = 400
    else:
        status = status_of(exc)
        if status >= 500:
            log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
            message = ("An unexpected error prevented the server from fulfilling your "
                       "request.")
        elif isinstance(exc, e.LoginFailed | e.TokenMissing | e.TokenInvalid |
                        e.TokenExpired | e.UserUnavailable | e.TokenWithoutProject |
                        e.ProjectMismatch):
            message = GENERIC_401
        else:
            assert isinstance(exc, e.DemanagerError)
            message = exc.message
    headers = None
    if isinstance(exc, e.LoginThrottled):
        headers = {"Retry-After": str(exc.retry_after)}
    log.info("%s %s -> %s: %s", request.method, request.url.path, status, message)
    return keystone_error(status, message, headers)


class KeystoneRoute(APIRoute):
    """An API route whose failures answer in Keystone's error shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def keystone_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:  # every failure, mapped above; 500s are logged
                return response_for(request, exc)

        return keystone_handler
