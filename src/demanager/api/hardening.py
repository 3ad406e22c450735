"""The protective middleware of the HTTP surface, in the order a request meets them.

Outermost first: security headers (so even a refusal carries them), CORS (so a
browser can read a refusal), the rate limit (cheapest refusal, before any body
is read), then the body size limit. ``create_app`` adds ``ContractPaths`` around
all of them, so every answer, refusals included, has an ``X-Request-Id``.
"""

from __future__ import annotations

from fastapi import FastAPI

from demanager.api.body_limit import BodyLimit
from demanager.api.cors import ContractCORS
from demanager.api.headers import SecurityHeaders
from demanager.api.rate_limit import RateLimit, TokenBuckets
from demanager.settings import Settings


def harden(app: FastAPI, settings: Settings) -> None:
    # Starlette wraps each middleware added around the ones before: add innermost first.
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    if settings.rate_limit_per_second > 0:
        buckets = TokenBuckets(settings.rate_limit_per_second, settings.rate_limit_burst)
        app.add_middleware(RateLimit, buckets=buckets)
    if settings.cors_origins:
        app.add_middleware(ContractCORS, origins=settings.cors_origins)
    app.add_middleware(SecurityHeaders)
