"""What crosses the proxy: headers, cookies and query parameters, in both directions.

Hop-by-hop headers belong to one connection and never cross (RFC 9110 §7.6.1,
including any header the ``Connection`` header names). The caller's credentials
for demanager (``X-Auth-Token``, ``Authorization``, the session cookie and the
``token`` query parameter) stop here: the upstream gets the instance's own
credential instead, from the stored endpoint (and ``scrub`` keeps that out of the
answers). ``Host`` becomes the upstream's,
and ``Origin``/``Referer`` are dropped: the proxy has already checked the caller,
and the notebook server would otherwise judge the public origin as foreign.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from urllib.parse import unquote_plus

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
    "trailer", "trailers", "transfer-encoding", "upgrade",
})
CALLER_CREDENTIALS = frozenset({"x-auth-token", "authorization"})
NOT_FORWARDED = frozenset({
    "host", "origin", "referer", "cookie", "forwarded",
    "accept-encoding",  # uncompressed answers, so ``scrub`` can see them (and loopback)
})
WEBSOCKET_HANDSHAKE = frozenset({
    "sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions",
    "sec-websocket-protocol", "sec-websocket-accept", "content-length",
})

SESSION_COOKIE = "demanager-notebook"
QUERY_CREDENTIAL = "token"

RawHeaders = Iterable[tuple[bytes, bytes]]


def _connection_named(headers: RawHeaders) -> set[str]:
    named: set[str] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            named.update(p.strip().lower() for p in value.decode("latin-1").split(","))
    return named


def request_headers(
    raw: RawHeaders, upstream: Mapping[str, str], *, client: str | None, host: str | None,
    scheme: str, websocket: bool = False,
) -> list[tuple[str, str]]:
    """The headers to send upstream: the caller's, filtered, plus the instance's own
    credential and the usual ``X-Forwarded-*``."""
    raw = list(raw)
    drop = HOP_BY_HOP | CALLER_CREDENTIALS | NOT_FORWARDED | _connection_named(raw)
    if websocket:
        drop = drop | WEBSOCKET_HANDSHAKE  # the client library makes its own handshake
    lowered_upstream = {k.lower() for k in upstream}
    out: list[tuple[str, str]] = []
    for name_b, value_b in raw:
        name = name_b.decode("latin-1").lower()
        if name in drop or name in lowered_upstream or name.startswith("x-forwarded-"):
            continue
        out.append((name, value_b.decode("latin-1")))
    cookie = upstream_cookie(raw)
    if cookie:
        out.append(("cookie", cookie))
    out.extend(upstream.items())
    if client:
        out.append(("x-forwarded-for", client))
    if host:
        out.append(("x-forwarded-host", host))
    out.append(("x-forwarded-proto", scheme))
    return out


def response_headers(raw: RawHeaders) -> list[tuple[bytes, bytes]]:
    """The upstream's headers for the caller: no hop-by-hop ones, and no attempt by the
    notebook to set (or shadow) the proxy's own session cookie."""
    raw = list(raw)
    drop = HOP_BY_HOP | _connection_named(raw)
    own = SESSION_COOKIE.encode("latin-1") + b"="
    return [
        (n, v) for n, v in raw
        if n.decode("latin-1").lower() not in drop
        and not (n.lower() == b"set-cookie" and v.lstrip().startswith(own))
    ]


def cookies(raw: RawHeaders) -> list[tuple[str, str]]:
    """Every ``name=value`` pair of the request's Cookie headers, in order."""
    pairs: list[tuple[str, str]] = []
    for name, value in raw:
        if name.lower() != b"cookie":
            continue
        for part in value.decode("latin-1").split(";"):
            key, sep, val = part.strip().partition("=")
            if sep:
                pairs.append((key.strip(), val.strip()))
    return pairs


def session_cookie(raw: RawHeaders) -> str | None:
    for key, value in cookies(raw):
        if key == SESSION_COOKIE:
            return value
    return None


def upstream_cookie(raw: RawHeaders) -> str:
    """The Cookie header without the proxy's own session cookie."""
    return "; ".join(f"{k}={v}" for k, v in cookies(raw) if k != SESSION_COOKIE)


def split_query(query: bytes) -> tuple[str | None, bytes]:
    """(the ``token`` parameter's first value, the query without any ``token``),
    keeping every other parameter byte for byte."""
    found: str | None = None
    kept: list[bytes] = []
    for part in query.split(b"&"):
        if not part:
            continue
        key, _, value = part.partition(b"=")
        if unquote_plus(key.decode("latin-1")) == QUERY_CREDENTIAL:
            if found is None:
                found = unquote_plus(value.decode("latin-1"))
            continue
        kept.append(part)
    return found, b"&".join(kept)


def header(raw: RawHeaders, name: str) -> str | None:
    wanted = name.lower().encode("latin-1")
    for key, value in raw:
        if key.lower() == wanted:
            return value.decode("latin-1")
    return None
