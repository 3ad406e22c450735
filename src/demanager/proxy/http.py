"""Stream one HTTP exchange to the instance and back.

The request body goes upstream as it arrives and the response body comes back
as it is read, chunk by chunk (``aiter_raw``: compressed bodies stay compressed),
so the proxy holds one chunk per direction at a time, whatever the size. If the
caller goes away mid-response, the upstream response is closed at once rather
than read to its end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import httpx
from starlette.types import Receive, Send

from demanager import errors
from demanager.proxy import forwarding
from demanager.proxy.scrub import Scrubber

log = logging.getLogger(__name__)

UPSTREAM_TIMEOUT = httpx.Timeout(connect=5.0, read=300.0, write=300.0, pool=30.0)
"""Long reads and writes: a notebook may take minutes to answer a big save or export."""


SMALL_BODY = 256 * 1024
"""Answers up to this size are relayed without watching for the caller leaving."""


def make_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(
        timeout=UPSTREAM_TIMEOUT,
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
        follow_redirects=False,
        trust_env=False,  # loopback upstreams: never through an HTTP proxy from the env
    )


class CallerGone(Exception):
    """The caller disconnected while its request body was being sent upstream."""


async def _request_chunks(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise CallerGone()
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


async def forward(
    client: httpx.AsyncClient, *, method: str, url: str, headers: list[tuple[str, str]],
    has_body: bool, receive: Receive, send: Send, scrubber: Scrubber,
) -> None:
    """Send the request upstream, then stream the answer to ``send``.

    Raises ``NotAnswering`` (before anything was sent back) when the upstream
    cannot be reached.
    """
    request = client.build_request(
        method, url, headers=headers, content=_request_chunks(receive) if has_body else None
    )
    try:
        response = await client.send(request, stream=True)
    except CallerGone:
        return  # nobody to answer
    except httpx.HTTPError as exc:  # refused, reset, timed out before an answer began
        raise errors.NotAnswering("RUNNING", "reach") from exc
    try:
        await send({
            "type": "http.response.start",
            "status": response.status_code,
            "headers": forwarding.response_headers(response.headers.raw),
        })
        length = response.headers.get("content-length", "")
        if length.isdigit() and int(length) <= SMALL_BODY:
            # Most answers (API JSON) are small: send them without a disconnect watcher.
            await _pump(response, send, scrubber)
            return
        pump = asyncio.create_task(_pump(response, send, scrubber))
        gone = asyncio.create_task(_wait_disconnect(receive))
        done, _ = await asyncio.wait({pump, gone}, return_when=asyncio.FIRST_COMPLETED)
        for task in (pump, gone):
            if task not in done:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if pump in done and (failure := pump.exception()) is not None:
            # Too late for an error status: ending without the final chunk tells the
            # caller the body is incomplete.
            log.warning("upstream %s broke off: %s", url.split("?")[0], failure)
    finally:
        await response.aclose()


async def _pump(response: httpx.Response, send: Send, scrubber: Scrubber) -> None:
    async for chunk in response.aiter_raw():
        cleaned = scrubber.feed(chunk)
        if cleaned:
            await send({"type": "http.response.body", "body": cleaned, "more_body": True})
    await send({"type": "http.response.body", "body": scrubber.flush(), "more_body": False})


async def _wait_disconnect(receive: Receive) -> None:
    """Returns when the caller disconnects (the request body is fully read by now)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
