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

#: For the server's own pages: script, style and fetches from this origin only,
#: never framed, forms posted back here only.
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'"
)

#: For HTML this server did not write itself (FastAPI's ``/docs`` loads its viewer
#: from a CDN): the anti-framing and anti-plugin part of the policy only.
BASELINE_CSP = "frame-ancestors 'none'; object-src 'none'; base-uri 'none'"

#: Every response the server answers itself.
COMMON_HEADERS = {"X-Content-Type-Options": "nosniff"}

#: API answers: never stored by a browser or a shared cache.
API_HEADERS = {"Cache-Control": "no-store"}

API_PREFIXES = ("/v1/", "/v3/")
PASS_THROUGH_PREFIXES = ("/notebooks/",)


def page_headers(csp: str = PAGE_CSP) -> dict[str, str]:
    """The headers of an HTML page the server renders; pass a stricter ``csp`` if the
    page needs less (a page with inline style must ship it as a file instead)."""
    return {
        **COMMON_HEADERS,
        "Content-Security-Policy": csp,
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
    }


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
