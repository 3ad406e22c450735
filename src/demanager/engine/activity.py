"""Reads a running notebook's activity from its Jupyter server, for the idle policy.

Two calls, the ones Jupyter offers idle cullers: ``api/status`` (the server's
``last_activity``) and ``api/kernels`` (each kernel's state, connections and last
activity). Both go with ``no_track_activity``, so that reading the activity does not
count as using the server. The answers come from code the user controls: each is
capped in size and time, and one that is late, large or malformed is no reading at
all, which never stops anything.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import httpx

from demanager.domain.instance import Endpoint
from demanager.domain.policy import Activity, ActivityUnreadable, parse_activity

log = logging.getLogger("demanager.engine.activity")

MAX_ANSWER_BYTES = 1 << 20
PROBE_TIMEOUT_SECONDS = 3.0


class ActivityProbe:
    """Reads activity at most once per ``interval_ms`` per instance, remembering the
    last reading in between (memory only: a restart reads afresh)."""

    def __init__(self, interval_ms: int, http: httpx.AsyncClient | None = None) -> None:
        self._interval_ms = interval_ms
        self._http = http or httpx.AsyncClient(
            timeout=PROBE_TIMEOUT_SECONDS, follow_redirects=False, trust_env=False
        )
        self._readings: dict[str, _Reading] = {}

    async def read(self, instance_id: str, endpoint: Endpoint, now_ms: int) -> Activity | None:
        last = self._readings.get(instance_id)
        fresh = last is not None and now_ms - last.at_ms < self._interval_ms
        if last is not None and fresh and last.endpoint == endpoint:
            return last.activity
        activity = await self._ask(instance_id, endpoint, now_ms)
        self._readings[instance_id] = _Reading(now_ms, endpoint, activity)
        return activity

    def forget(self, instance_id: str) -> None:
        self._readings.pop(instance_id, None)

    async def close(self) -> None:
        await self._http.aclose()

    async def _ask(self, instance_id: str, endpoint: Endpoint, now_ms: int) -> Activity | None:
        host = f"[{endpoint.host}]" if ":" in endpoint.host else endpoint.host
        base = f"http://{host}:{endpoint.port}{endpoint.base_path}"
        try:
            status = await self._get_json(f"{base}api/status", endpoint)
            kernels = await self._get_json(f"{base}api/kernels", endpoint)
            return parse_activity(status, kernels, now_ms)
        except (httpx.HTTPError, ValueError, _Unusable) as exc:
            # ActivityUnreadable and json's errors are ValueErrors.
            kind = "unreadable" if isinstance(exc, ActivityUnreadable) else "unanswered"
            log.info("%s: activity %s (%s); not judged idle", instance_id, kind, exc)
            return None

    async def _get_json(self, url: str, endpoint: Endpoint) -> object:
        async with self._http.stream(
            "GET", url, params={"no_track_activity": "1"}, headers=dict(endpoint.headers)
        ) as response:
            if response.status_code != 200:
                raise _Unusable(f"HTTP {response.status_code}")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_ANSWER_BYTES:
                    raise _Unusable("answer too large")
        return json.loads(body)


class _Unusable(Exception):
    pass


@dataclass(frozen=True)
class _Reading:
    at_ms: int
    endpoint: Endpoint
    activity: Activity | None
