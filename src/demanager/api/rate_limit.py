"""Per-token rate limiting: a token bucket per caller, answered with 429 ``ModelArts.6101``.

One caller flooding the API must not starve the others of a small server. Each
caller has a bucket of ``burst`` requests that refills at ``rate`` per second;
a request finding it empty is refused with ``Retry-After`` saying when the next
one will be let through. The caller is a hash of its ``X-Auth-Token`` (the token
itself is never kept), or its client address when it sends none.

The buckets live in this process's memory: with several server processes each
one limits on its own, so a caller gets up to N times the rate across N of them.
The number of buckets is bounded (a flood of distinct made-up tokens cannot grow
memory without end): the least recently used bucket is dropped first, which at
worst hands that caller a fresh burst.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from demanager.api.errors import RATE_LIMITED, error_response

#: Path prefixes that are limited: the REST API and the Keystone routes (where a
#: limit by address also slows down guessing of passwords). Not the notebook proxy,
#: whose page loads fan out into hundreds of requests.
LIMITED_PREFIXES = ("/v1/", "/v3/")
MAX_BUCKETS = 100_000


@dataclass
class _Bucket:
    tokens: float
    updated: float


class TokenBuckets:
    """Buckets keyed by caller; ``take`` answers 0 (go) or the seconds to wait."""

    def __init__(self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic,
                 max_buckets: int = MAX_BUCKETS) -> None:
        self.rate = rate
        self.burst = float(max(burst, 1))
        self.clock = clock
        self.max_buckets = max_buckets
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def take(self, key: str) -> float:
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(self.burst, now)
            if len(self._buckets) > self.max_buckets:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate


def caller_key(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-auth-token" and value:
            return "token:" + hashlib.sha256(value).hexdigest()
    client = scope.get("client")
    return f"address:{client[0] if client else 'unknown'}"


class RateLimit:
    def __init__(self, app: ASGIApp, buckets: TokenBuckets) -> None:
        self.app = app
        self.buckets = buckets

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(LIMITED_PREFIXES):
            await self.app(scope, receive, send)
            return
        wait = self.buckets.take(caller_key(scope))
        if wait <= 0:
            await self.app(scope, receive, send)
            return
        status, code = RATE_LIMITED
        response = error_response(
            status, code, "Too many requests from this caller; retry later.",
            {"Retry-After": str(max(1, math.ceil(wait)))},
        )
        await response(scope, receive, send)
