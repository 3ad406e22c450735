"""The proxy as an ASGI middleware in front of the API.

Requests for ``/notebooks/{id}/…`` and the sign-in page never reach FastAPI's
router: the middleware answers them itself, so a proxied request costs one
credential check, one row read and the upstream exchange, nothing more.
"""

from __future__ import annotations

import logging
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from demanager import errors
from demanager.domain.instance import Endpoint, Instance
from demanager.domain.lifecycle import InstanceStatus
from demanager.engine.runtime import Runtime
from demanager.proxy import access, forwarding, pages, signin
from demanager.proxy import http as http_proxy
from demanager.proxy import websocket as ws_proxy
from demanager.proxy.scrub import Scrubber, secrets_of

log = logging.getLogger(__name__)

PREFIX = b"/notebooks/"


class Gateway:
    """Holds the upstream HTTP client; one per server."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.upstream = http_proxy.Upstream()
        self.instances = access.InstanceCache(runtime)

    async def aclose(self) -> None:
        await self.upstream.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == pages.SIGN_IN_PATH:
            if scope["type"] == "http":
                response = await signin.handle(self.runtime, Request(scope, receive))
                await response(scope, receive, send)
            else:
                await WebSocket(scope, receive, send).close(code=1008)
            return
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
        raw_id, slash, tail = raw_path[len(PREFIX):].partition(b"/")
        target = _Target(scope, raw_id.decode("latin-1"), tail.decode("latin-1"))
        if not slash:  # /notebooks/{id}: Jupyter lives under the slash
            if scope["type"] == "http":
                query = scope.get("query_string", b"").decode("latin-1")
                location = f"/notebooks/{target.raw_id}/" + (f"?{query}" if query else "")
                await RedirectResponse(location, status_code=302)(scope, receive, send)
            else:
                await WebSocket(scope, receive, send).close(code=1008)
            return
        try:
            found = await self._admit(target)
        except errors.DemanagerError as exc:
            await self._refuse(target, exc, receive, send)
            return
        except Exception:
            # The store failed, say: the contract's internal error, never a bare 500.
            log.exception("proxy: checking %s failed", target.instance_id)
            await self._refuse(target, errors.InternalError(), receive, send)
            return
        if isinstance(found, Response):
            await found(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await self._websocket(target, found, receive, send)
        else:
            await self._http(target, found, receive, send)

    async def _admit(self, target: _Target) -> Endpoint | Response:
        credential = access.credential_of(target.headers, target.query_token)
        principal, instance = await access.admit(self.runtime, credential, target.instance_id,
                                                 self.instances)
        assert credential is not None
        if (
            credential.source is access.Source.COOKIE
            and target.websocket
            and not _same_origin(target)
        ):
            # Cross-site WebSocket hijacking: a page elsewhere riding on the cookie.
            raise errors.InstanceNotFound(target.instance_id)
        if (
            credential.source is access.Source.QUERY
            and not target.websocket
            and target.method == "GET"
        ):
            # A signed link: trade it for the session cookie, then show the clean URL.
            return signin.enter(self.runtime, principal, target.raw_id, target.instance_id,
                                target.clean_path, target.scheme)
        return _endpoint(instance)

    async def _refuse(self, target: _Target, exc: errors.DemanagerError,
                      receive: Receive, send: Send) -> None:
        if target.websocket:
            socket = WebSocket(target.scope, receive, send)
            if "websocket.http.response" in target.scope.get("extensions", {}):
                await socket.send_denial_response(pages.json_error(exc))
            else:
                await socket.close(code=1008)
            return
        answer = pages.error_answer(exc, browser=target.browser, next_path=target.clean_path)
        await answer(target.scope, receive, send)

    async def _http(self, target: _Target, endpoint: Endpoint,
                    receive: Receive, send: Send) -> None:
        has_body = any(
            k.lower() in (b"content-length", b"transfer-encoding") for k, _ in target.headers
        )
        receive, send = self._counted(receive, send)
        for resend in (True, False):
            headers = forwarding.request_headers(
                target.headers, endpoint.headers, client=_client(target.scope),
                host=target.host, scheme=target.scheme,
            )
            try:
                await http_proxy.forward(
                    self.upstream, method=target.method, url=target.upstream("http", endpoint),
                    headers=headers, has_body=has_body, receive=receive, send=send,
                    scrubber=Scrubber(secrets_of(endpoint.headers)),
                )
                return
            except http_proxy.Refused as exc:
                # Nothing of the request went: it is sent once more, where the row says now.
                moved = await self._moved(target, endpoint) if resend else None
                if moved is None:
                    _unreachable(target, exc)
                    await self._refuse(target, exc, receive, send)
                    return
                endpoint = moved
            except errors.NotAnswering as exc:
                _unreachable(target, exc)
                await self._refuse(target, exc, receive, send)
                return

    async def _moved(self, target: _Target, endpoint: Endpoint) -> Endpoint | None:
        """The instance's endpoint read afresh, if it is not ``endpoint`` (which refused a
        connection): the row the cache kept was older than a quick restart."""
        self.instances.forget(target.instance_id)
        instance = await self.instances.get(target.instance_id)
        if instance is None or instance.status is not InstanceStatus.RUNNING:
            return None
        if instance.endpoint is None or instance.endpoint == endpoint:
            return None
        return instance.endpoint

    async def _websocket(self, target: _Target, endpoint: Endpoint,
                         receive: Receive, send: Send, *, resend: bool = True) -> None:
        headers = forwarding.request_headers(
            target.headers, endpoint.headers, client=_client(target.scope), host=target.host,
            scheme=target.scheme, websocket=True,
        )
        try:
            upstream = await ws_proxy.open_upstream(
                target.upstream("ws", endpoint), headers, target.scope.get("subprotocols", []),
            )
        except ws_proxy.Denied as denied:
            await self._pass_denial(target, denied, secrets_of(endpoint.headers),
                                    receive, send)
            return
        except errors.NotAnswering as exc:
            # Nothing was relayed yet: an endpoint that moved is tried once, afresh.
            moved = await self._moved(target, endpoint) if resend else None
            if moved is None:
                _unreachable(target, exc)
                await self._refuse(target, exc, receive, send)
                return
            await self._websocket(target, moved, receive, send, resend=False)
            return
        receive, send = self._counted(receive, send)
        opened = self.runtime.metrics.proxy_websockets
        opened.inc()
        try:
            await ws_proxy.relay(WebSocket(target.scope, receive, send), upstream,
                                 secrets_of(endpoint.headers))
        finally:
            opened.dec()

    async def _pass_denial(self, target: _Target, denied: ws_proxy.Denied,
                           secrets: list[bytes], receive: Receive, send: Send) -> None:
        """The notebook's own answer to a handshake it would not upgrade (Jupyter's 404 for
        an unknown kernel, say), scrubbed like any response it sends."""
        socket = WebSocket(target.scope, receive, send)
        if "websocket.http.response" not in target.scope.get("extensions", {}):
            await socket.close(code=1008)
            return
        scrubber = Scrubber(secrets)
        body = scrubber.feed(denied.body) + scrubber.flush()
        headers = [(n, v) for n, v in forwarding.response_headers(denied.headers)
                   if n.lower() not in (b"content-length", b"transfer-encoding")]
        answer = Response(body, status_code=denied.status)  # its only header: the length
        answer.raw_headers = [*answer.raw_headers, *headers]
        await socket.send_denial_response(answer)

    def _counted(self, receive: Receive, send: Send) -> tuple[Receive, Send]:
        """``receive`` and ``send`` that count the bytes of bodies and messages relayed."""
        inbound = self.runtime.metrics.proxy_bytes.labels("in")
        outbound = self.runtime.metrics.proxy_bytes.labels("out")

        async def counted_receive() -> Message:
            message = await receive()
            if size := _payload_size(message):
                inbound.inc(size)
            return message

        async def counted_send(message: Message) -> None:
            await send(message)
            if size := _payload_size(message):
                outbound.inc(size)

        return counted_receive, counted_send


def _payload_size(message: Message) -> int:
    """Bytes of an HTTP body chunk or a WebSocket message (headers aside)."""
    kind = message["type"]
    if kind in ("http.request", "http.response.body"):
        return len(message.get("body", b""))
    if kind in ("websocket.receive", "websocket.send"):
        if message.get("bytes") is not None:
            return len(message["bytes"])
        if message.get("text") is not None:
            return len(message["text"].encode("utf-8"))
    return 0


class _Target:
    """One proxied request, parsed once."""

    def __init__(self, scope: Scope, raw_id: str, tail: str) -> None:
        self.scope = scope
        self.raw_id = raw_id
        self.instance_id = unquote(raw_id)
        self.tail = tail
        self.headers: list[tuple[bytes, bytes]] = list(scope.get("headers", []))
        self.websocket = scope["type"] == "websocket"
        self.method: str = scope.get("method", "GET")
        self.query_token, self.query = forwarding.split_query(scope.get("query_string", b""))
        self.browser = pages.wants_html(forwarding.header(self.headers, "accept"))
        self.host = forwarding.header(self.headers, "host")
        scheme = str(scope.get("scheme", "http"))
        self.scheme: str = {"ws": "http", "wss": "https"}.get(scheme, scheme)

    @property
    def clean_path(self) -> str:
        """The request's own path and query, without the credential parameter."""
        query = self.query.decode("latin-1")
        return f"/notebooks/{self.raw_id}/{self.tail}" + (f"?{query}" if query else "")

    def upstream(self, scheme: str, endpoint: Endpoint) -> str:
        query = self.query.decode("latin-1")
        base = endpoint.base_path.rstrip("/")
        return (f"{scheme}://{endpoint.host}:{endpoint.port}{base}/{self.tail}"
                + (f"?{query}" if query else ""))


def _endpoint(instance: Instance) -> Endpoint:
    if instance.status is not InstanceStatus.RUNNING:
        raise errors.NotRunning(instance.status.value, "open")
    if instance.endpoint is None:
        raise errors.NotAnswering(instance.status.value, "open")
    return instance.endpoint


def _unreachable(target: _Target, exc: errors.NotAnswering) -> None:
    """Log why a RUNNING instance's notebook could not be reached: the caller is told only
    that it is not answering."""
    kind = "WebSocket" if target.websocket else target.method
    log.warning("proxy: %s %s: the notebook did not answer: %r",
                kind, target.clean_path.split("?")[0], exc.__cause__ or exc)


def _client(scope: Scope) -> str | None:
    client = scope.get("client")
    return str(client[0]) if client else None


def _same_origin(target: _Target) -> bool:
    origin = forwarding.header(target.headers, "origin")
    if origin is None:
        return True
    host = origin.split("://", 1)[-1].rstrip("/")
    return host == (target.host or "")


class NotebookProxy:
    """Routes ``/notebooks/{id}/…`` and the sign-in page to the app's ``Gateway``
    (``app.state.gateway``, made in the lifespan); everything else to ``app``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            path: str = scope["path"]
            if (path.startswith("/notebooks/") and len(path) > len("/notebooks/")) or (
                path == pages.SIGN_IN_PATH
            ):
                gateway: Gateway = scope["app"].state.gateway
                await gateway(scope, receive, send)
                return
        await self.app(scope, receive, send)
