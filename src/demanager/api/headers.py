"""Security headers for everything the server answers itself.

Two kinds of response come out of this server. API answers (JSON under ``/v1/``
and ``/v3/``) carry tokens and instance details, so no cache may keep them
(``Cache-Control: no-store``). Pages the server renders (the console, the
access proxy's sign-in and "not running" pages) hold or ask for a token, so
they may not be framed (clickjacking), leak their address in a ``Referer``, or
run script from anywhere but this origin.

``page_headers()`` is the set a page should send, for any code that builds an
HTML response; ``SecurityHeaders`` adds what a response lacks, so a page that
forgot still gets the framing and sniffing defences. Responses the notebook
proxy relays (``/notebooks/…``) are Jupyter's own and are left as they are.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from demanager.web.headers import BASELINE_CSP, COMMON_HEADERS, page_headers

#: API answers: never stored by a browser or a shared cache.
API_HEADERS = {"Cache-Control": "no-store"}

API_PREFIXES = ("/v1/", "/v3/")
PASS_THROUGH_PREFIXES = ("/notebooks/",)


def _missing(headers: MutableHeaders, wanted: dict[str, str]) -> None:
    for name, value in wanted.items():
        if name not in headers:
            headers[name] = value


class SecurityHeaders:
    """Fill in the headers above on every response the server answers itself."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or path.startswith(PASS_THROUGH_PREFIXES):
            await self.app(scope, receive, send)
            return
        api = path.startswith(API_PREFIXES)

        async def secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                _missing(headers, COMMON_HEADERS)
                if api:
                    _missing(headers, API_HEADERS)
                if headers.get("content-type", "").startswith("text/html"):
                    _missing(headers, page_headers(BASELINE_CSP))
            await send(message)

        await self.app(scope, receive, secured)
