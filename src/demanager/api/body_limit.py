"""Refuse API request bodies over ``max_body_bytes`` with 413, without buffering them.

The API's bodies are small JSON documents, so anything large is a mistake or an
attack; it is cut off as it streams in rather than read whole and then measured.
A declared ``Content-Length`` over the limit is answered before a byte is read;
a body without one (chunked) is counted as the route reads it, and the request
ends in a 413 the moment the count passes the limit.

Only the API's own prefixes are limited: ``/notebooks/…`` is a reverse proxy to
Jupyter, where uploads of a gigabyte are legitimate and pass through untouched.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from demanager.api.errors import PAYLOAD_TOO_LARGE, error_response

#: Path prefixes whose request bodies are limited (the REST API and Keystone routes).
LIMITED_PREFIXES = ("/v1/", "/v3/")


class _TooLarge(Exception):
    """Raised out of ``receive`` to abandon the route; caught by the middleware."""


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the HTTP server rejects a malformed one before we see it
    return None


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(LIMITED_PREFIXES):
            await self.app(scope, receive, send)
            return
        declared = _declared_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, receive, send)
            return

        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except _TooLarge:
            if started:  # a route that answers before reading its body: nothing to change
                raise
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        status, code = PAYLOAD_TOO_LARGE
        message = f"The request payload is too large (at most {self.max_bytes} bytes)."
        # The client may still be sending; closing tells it to stop rather than
        # draining (and so reading) the rest of an unwanted body.
        response = error_response(status, code, message, {"Connection": "close"})
        await response(scope, receive, send)
