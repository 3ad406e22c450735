"""Relay one WebSocket between the caller and the instance.

The upstream connection is opened first, so a notebook that refuses it can
still be answered with an error instead of an accepted-then-closed socket. Then
two pumps copy messages each way until either side closes; the close code
crosses over. Messages are relayed whole (a WebSocket message is the unit both
ends deliver), bounded by ``MAX_MESSAGE_BYTES``.
"""

from __future__ import annotations

import asyncio
import contextlib

from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidStatus,
    InvalidURI,
)
from websockets.typing import Subprotocol

from demanager import errors

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""A notebook output (an image, a big table) fits; a hostile kernel cannot make the
proxy buffer more than this per message."""
OPEN_TIMEOUT = 75.0
"""How long the upstream may take to answer the handshake. Jupyter holds a kernel's
channels handshake until the kernel has started and replied to ``kernel_info``, up to its
own ``kernel_info_timeout`` (60 s): a fresh kernel on a busy host, or one restarting
after its memory ran out, is slow, not gone. A refused connection still fails at once."""


class Denied(Exception):
    """The notebook answered the handshake with an HTTP response instead of upgrading
    (an unknown kernel, a refused origin): the caller gets that answer, not ours."""

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        super().__init__(status)
        self.status = status
        self.headers = headers
        self.body = body


async def open_upstream(url: str, headers: list[tuple[str, str]],
                        subprotocols: list[str]) -> ClientConnection:
    """Connect to the instance; ``Denied`` if it answered the handshake with a response of
    its own, ``NotAnswering`` if it will not take the connection."""
    try:
        return await connect(
            url,
            additional_headers=headers,
            subprotocols=[Subprotocol(s) for s in subprotocols if s] or None,
            max_size=MAX_MESSAGE_BYTES,
            open_timeout=OPEN_TIMEOUT,
            compression=None,  # loopback: compressing costs CPU and saves nothing
            user_agent_header=None,
            proxy=None,
        )
    except InvalidStatus as exc:
        answer = exc.response
        raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in answer.headers.raw_items()]
        raise Denied(answer.status_code, raw, bytes(answer.body)) from exc
    except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
        raise errors.NotAnswering("RUNNING", "reach") from exc


async def relay(caller: WebSocket, upstream: ClientConnection, secrets: list[bytes]) -> None:
    """Accept the caller with the upstream's subprotocol, then copy both ways."""
    await caller.accept(subprotocol=upstream.subprotocol)
    up = asyncio.create_task(_caller_to_upstream(caller, upstream))
    down = asyncio.create_task(_upstream_to_caller(caller, upstream, secrets))
    try:
        await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (up, down):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await upstream.close()
        code = upstream.close_code or 1000
        with contextlib.suppress(Exception):
            await caller.close(code=code if code not in (1005, 1006, 1015) else 1011)


async def _caller_to_upstream(caller: WebSocket, upstream: ClientConnection) -> None:
    with contextlib.suppress(WebSocketDisconnect, ConnectionClosed):
        while True:
            message = await caller.receive()
            if message["type"] == "websocket.disconnect":
                await upstream.close(code=message.get("code") or 1000)
                return
            if message.get("text") is not None:
                await upstream.send(message["text"])
            elif message.get("bytes") is not None:
                await upstream.send(message["bytes"])


async def _upstream_to_caller(
    caller: WebSocket, upstream: ClientConnection, secrets: list[bytes]
) -> None:
    with contextlib.suppress(ConnectionClosed):
        async for data in upstream:
            # Each message is whole: mask the upstream credential in it (see ``scrub``).
            if isinstance(data, str):
                await caller.send_text(_mask_text(data, secrets))
            else:
                await caller.send_bytes(_mask_bytes(data, secrets))


def _mask_text(data: str, secrets: list[bytes]) -> str:
    for secret in secrets:
        text = secret.decode("latin-1")
        if text in data:
            data = data.replace(text, "*" * len(text))
    return data


def _mask_bytes(data: bytes, secrets: list[bytes]) -> bytes:
    for secret in secrets:
        if secret in data:
            data = data.replace(secret, b"*" * len(secret))
    return data
