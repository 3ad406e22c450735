"""Cross-origin access, off unless ``cors_origins`` lists origins.

Starlette's CORS middleware does the work; this only makes a refused preflight
answer in the contract's error shape (§1.8) rather than as plain text, and fixes
what a browser client may send and read: the token travels in a header, never in
a cookie, so credentials stay off.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp

from demanager.api.errors import error_response

METHODS = ("GET", "POST", "PUT", "DELETE")
REQUEST_HEADERS = ("X-Auth-Token", "Content-Type")
EXPOSED_HEADERS = ("X-Request-Id", "Retry-After")
REFUSED = (400, "ModelArts.6600")
"""A preflight the policy refuses: the generic "parameter failed verification" (§7.2)."""


class ContractCORS(CORSMiddleware):
    def __init__(self, app: ASGIApp, origins: Sequence[str]) -> None:
        super().__init__(app, allow_origins=origins, allow_methods=METHODS,
                         allow_headers=REQUEST_HEADERS, expose_headers=EXPOSED_HEADERS)

    def preflight_response(self, request_headers: Headers) -> Response:
        answer = super().preflight_response(request_headers)
        if answer.status_code < 400:
            return answer
        status, code = REFUSED
        reason = bytes(answer.body).decode(errors="replace")
        return error_response(status, code, f"{reason}: the cross-origin request is refused.")
