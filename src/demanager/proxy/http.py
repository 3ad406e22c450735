"""Stream one HTTP exchange to the instance and back.

The request body goes upstream as it arrives and the response body comes back
as it is read, chunk by chunk, so the proxy holds one chunk per direction at a
time, whatever the size. If the caller goes away mid-response, the upstream
response is closed at once rather than read to its end.

The upstream leg uses aiohttp: its C parser makes a proxied request cost a
fraction of what a pure-Python client costs, and every notebook request pays it.
It is imported with the first proxied request: with its parts it is about 8 MiB of
a server's memory, which a control plane that proxies nothing never needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from starlette.types import Receive, Send

from demanager import errors
from demanager.proxy import forwarding
from demanager.proxy.scrub import Scrubber

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger(__name__)

CONNECT_SECONDS = 5.0
READ_SECONDS = 300.0
"""Long reads: a notebook may take minutes to answer a big save or export."""

SMALL_BODY = 256 * 1024
"""Answers up to this size are relayed without watching for the caller leaving."""

NO_DEFAULT_HEADERS = ("Accept", "Accept-Encoding", "Content-Type", "User-Agent")
"""Headers the client would add on its own: upstream sees only what the caller sent
(filtered) and what the proxy adds."""


class Upstream:
    """The pooled client of every proxied request; made in the running loop on first
    use (the client binds to its loop), closed with the server."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            import aiohttp

            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, limit_per_host=0),
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=CONNECT_SECONDS, sock_read=READ_SECONDS),
                auto_decompress=False,
                skip_auto_headers=NO_DEFAULT_HEADERS,
                trust_env=False,  # loopback upstreams: never through an HTTP proxy from the env
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


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


class Refused(errors.NotAnswering):
    """The upstream refused the connection itself: nothing of the request was sent, so
    it may be sent again (elsewhere)."""


async def forward(
    upstream: Upstream, *, method: str, url: str, headers: list[tuple[str, str]],
    has_body: bool, receive: Receive, send: Send, scrubber: Scrubber,
) -> None:
    """Send the request upstream, then stream the answer to ``send``.

    Raises ``NotAnswering`` (before anything was sent back) when the upstream
    cannot be reached, ``Refused`` when it took no connection at all.
    """
    session = upstream.session()
    import aiohttp  # imported by now: these are dictionary lookups
    from multidict import CIMultiDict
    from yarl import URL

    try:
        response = await session.request(
            method,
            URL(url, encoded=True),  # the path and query cross byte for byte
            headers=CIMultiDict(headers),
            data=_request_chunks(receive) if has_body else None,
            allow_redirects=False,
        )
    except CallerGone:
        return  # nobody to answer
    except aiohttp.ClientConnectorError as exc:  # no connection: no byte of it went
        raise Refused("RUNNING", "reach") from exc
    except (aiohttp.ClientError, TimeoutError) as exc:  # reset, timed out
        raise errors.NotAnswering("RUNNING", "reach") from exc
    try:
        await send({
            "type": "http.response.start",
            "status": response.status,
            "headers": forwarding.response_headers(response.raw_headers),
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
            response.close()
        elif pump not in done:
            response.close()  # the caller left: drop the connection, not read to the end
    finally:
        response.release()


async def _pump(response: aiohttp.ClientResponse, send: Send, scrubber: Scrubber) -> None:
    async for chunk in response.content.iter_any():
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
