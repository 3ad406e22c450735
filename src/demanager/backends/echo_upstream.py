"""A tiny real upstream for the fake backend: loopback HTTP and WebSocket echo.

The fake backend has no notebook server, yet the proxy in front of it must be
testable for refusal *and* success, over HTTP and WebSocket, without Jupyter.
This server answers every request under ``/notebooks/{id}/`` with what it
received (method, path as sent, query, headers, body size) and echoes WebSocket
messages, but only when the request carries the instance's upstream credential,
exactly as Jupyter would. ``…/bytes?n=N`` streams N bytes, for download checks. A
WebSocket handshake for a path with a ``missing`` segment is answered 404, as Jupyter
answers one for an unknown kernel, with the credential it was sent in the body.

It runs in the server's own event loop on 127.0.0.1, starts with the first
workload and stops when the backend closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable, Generator

import uvicorn
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

CHUNK = 64 * 1024


class _InLoopServer(uvicorn.Server):
    """A uvicorn server that leaves the host process's signal handlers alone."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class EchoUpstream:
    def __init__(self, token_of: Callable[[str], str | None]) -> None:
        self._token_of = token_of
        """instance id -> the token the upstream demands, or None when it serves no
        workload of that instance (the fake backend's lookup)."""
        self._server: _InLoopServer | None = None
        self._task: asyncio.Task[None] | None = None
        self.port = 0

    async def ensure_started(self) -> int:
        if self._server is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
            # No logging configuration of its own: uvicorn's would replace the server's
            # handlers and levels for every ``uvicorn.*`` logger, the host's included.
            config = uvicorn.Config(self, lifespan="off", log_config=None, log_level=None,
                                    access_log=False)
            self._server = _InLoopServer(config)
            self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        return self.port

    async def close(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 5.0)
        self._server = None
        self._task = None

    def _allowed(self, path: str, authorization: str | None) -> str | None:
        """The instance the request is for, if it carries that instance's credential."""
        parts = path.split("/")
        if len(parts) < 3 or parts[1] != "notebooks":
            return None
        token = self._token_of(parts[2])
        if token is None or authorization != f"token {token}":
            return None
        return parts[2]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._websocket(WebSocket(scope, receive, send))
        elif scope["type"] == "http":
            response = await self._http(Request(scope, receive))
            await response(scope, receive, send)

    async def _http(self, request: Request) -> Response:
        instance = self._allowed(request.url.path, request.headers.get("authorization"))
        if instance is None:
            return JSONResponse({"message": "Forbidden"}, status_code=403)
        if request.url.path.endswith("/bytes"):
            return StreamingResponse(_zeros(int(request.query_params.get("n", "0"))),
                                     media_type="application/octet-stream")
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
        return JSONResponse({
            "instance": instance,
            "method": request.method,
            "path": request.url.path,
            "raw_path": (request.scope.get("raw_path") or b"").decode("latin-1"),
            "query": request.url.query,
            "headers": dict(request.headers.items()),
            "body_bytes": size,
        }, headers={"Set-Cookie": "upstream=1; Path=/"})

    async def _websocket(self, ws: WebSocket) -> None:
        authorization = ws.headers.get("authorization")
        if self._allowed(ws.url.path, authorization) is None:
            await ws.close(code=4403)
            return
        if "missing" in ws.url.path.split("/"):
            await ws.send_denial_response(JSONResponse(
                {"message": "Kernel does not exist", "authorization": authorization},
                status_code=404))
            return
        offered = ws.scope.get("subprotocols") or []
        await ws.accept(subprotocol=offered[0] if offered else None)
        with contextlib.suppress(Exception):
            while True:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    return
                if message.get("text") is not None:
                    await ws.send_text(message["text"])
                elif message.get("bytes") is not None:
                    await ws.send_bytes(message["bytes"])


async def _zeros(total: int) -> AsyncIterator[bytes]:
    block = bytes(CHUNK)
    while total > 0:
        yield block[: min(total, CHUNK)]
        total -= CHUNK
