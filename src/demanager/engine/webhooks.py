"""Posts the lifecycle policy's stop warnings to the operator's webhook.

A delivery runs beside the engine, never in its way: it is tried a few times with a
short timeout, and one that still fails is logged and dropped (the warning itself is
in the event log either way). With a secret, each body is signed with HMAC-SHA256 so
the receiver can tell the server's posts from anyone else's.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import Mapping
from typing import Any

import httpx

log = logging.getLogger("demanager.engine.webhooks")

SIGNATURE_HEADER = "X-Demanager-Signature"
ATTEMPTS = 3
TIMEOUT_SECONDS = 5.0


class Webhook:
    def __init__(
        self, url: str, secret: str | None = None, http: httpx.AsyncClient | None = None
    ) -> None:
        self._url = url
        self._secret = secret.encode() if secret else None
        self._http = http or httpx.AsyncClient(timeout=TIMEOUT_SECONDS, trust_env=False)
        self._pending: set[asyncio.Task[None]] = set()

    def post(self, payload: Mapping[str, Any]) -> None:
        """Deliver ``payload`` in the background."""
        task = asyncio.create_task(self._deliver(dict(payload)), name="webhook delivery")
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def signature(self, body: bytes) -> str | None:
        if self._secret is None:
            return None
        return "sha256=" + hmac.new(self._secret, body, hashlib.sha256).hexdigest()

    async def _deliver(self, payload: dict[str, Any]) -> None:
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
        headers = {"Content-Type": "application/json"}
        signed = self.signature(body)
        if signed is not None:
            headers[SIGNATURE_HEADER] = signed
        for attempt in range(1, ATTEMPTS + 1):
            try:
                response = await self._http.post(self._url, content=body, headers=headers)
                if response.status_code < 300:
                    return
                problem = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                problem = type(exc).__name__
            if attempt < ATTEMPTS:
                await asyncio.sleep(0.5 * attempt)
        log.warning(
            "stop warning for %s not delivered to the webhook after %d tries: %s",
            payload.get("instance_id"), ATTEMPTS, problem,
        )

    async def drain(self) -> None:
        """Wait for the deliveries under way (tests, and a clean shutdown)."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    async def close(self) -> None:
        await self.drain()
        await self._http.aclose()
