"""The security headers of the pages this server renders itself (the console, the
proxy's sign-in and "not running" pages): one policy, used by the API's middleware,
the console and the proxy alike. Plain data, no web framework."""

from __future__ import annotations

#: For the server's own pages: script, style and fetches from this origin only,
#: never framed, forms posted back here only.
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'"
)

#: For pages with no script at all (the proxy's): the same, narrowed further.
NO_SCRIPT_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)

#: For HTML this server did not write itself (FastAPI's ``/docs`` loads its viewer
#: from a CDN): the anti-framing and anti-plugin part of the policy only.
BASELINE_CSP = "frame-ancestors 'none'; object-src 'none'; base-uri 'none'"

#: Every response the server answers itself.
COMMON_HEADERS = {"X-Content-Type-Options": "nosniff"}


def page_headers(csp: str = PAGE_CSP) -> dict[str, str]:
    """The headers of an HTML page the server renders; pass a stricter ``csp`` if the
    page needs less (a page with inline style must ship it as a file instead)."""
    return {
        **COMMON_HEADERS,
        "Content-Security-Policy": csp,
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
    }
