"""The proxy waits for a notebook's WebSocket handshake as long as Jupyter itself may hold
it: Jupyter answers a kernel's channels handshake only once the kernel has replied to
``kernel_info``, and a fresh kernel on a busy host (or one restarting after an OOM kill)
takes seconds. A port that takes no connection is still refused at once."""

from __future__ import annotations

import asyncio
import socket

import pytest
from jupyter_server.services.kernels.kernelmanager import MappingKernelManager
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from demanager import errors
from demanager.proxy import websocket as ws_proxy

HELD_SECONDS = 11.0
"""Longer than the 10 s the proxy once allowed, which cut off slow kernels."""


def test_the_proxy_outwaits_jupyters_own_kernel_info_timeout() -> None:
    jupyters = MappingKernelManager.kernel_info_timeout.default_value
    assert jupyters < ws_proxy.OPEN_TIMEOUT


@pytest.mark.slow
async def test_a_handshake_held_while_the_kernel_starts_is_relayed() -> None:
    async def hold(connection: ServerConnection, request: Request) -> Response | None:
        await asyncio.sleep(HELD_SECONDS)  # as Jupyter does until kernel_info is answered
        return None

    async def echo(connection: ServerConnection) -> None:
        async for message in connection:
            await connection.send(message)

    async with serve(echo, "127.0.0.1", 0, process_request=hold, open_timeout=None) as server:
        port = server.sockets[0].getsockname()[1]
        upstream = await ws_proxy.open_upstream(
            f"ws://127.0.0.1:{port}/api/kernels/k/channels", [],
            ["v1.kernel.websocket.jupyter.org"],
        )
        try:
            await upstream.send("after the wait")
            assert await upstream.recv() == "after the wait"
        finally:
            await upstream.close()


async def test_a_port_that_takes_no_connection_is_not_answering() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(errors.NotAnswering) as refused:
        await ws_proxy.open_upstream(f"ws://127.0.0.1:{port}/api/kernels/k/channels", [], [])
    assert isinstance(refused.value.__cause__, OSError)
