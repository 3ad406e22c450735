"""A proxied request whose kept endpoint refuses the connection is sent once more, to the
endpoint the store names now: a notebook restarted quicker than the proxy's row cache
(a server forked from the zygote restarts in well under a second) is reached, body and
all; and a refusal that no fresh row explains is answered, never retried in a loop."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from starlette.types import Message

from demanager.backends.fake import FakeBackend
from demanager.domain.instance import Endpoint
from demanager.engine.clock import FakeClock
from demanager.engine.runtime import Runtime, backend_context
from demanager.proxy.gateway import Gateway, _Target
from demanager.settings import Settings
from demanager.store.database import upgrade
from tests.unit.test_reconciler import PRINCIPAL, _body

BODY = b"cell" * 4096


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    settings = Settings(data_dir=tmp_path, backend="fake", bootstrap_token="t")
    await asyncio.to_thread(upgrade, settings.sqlalchemy_url)
    fake = FakeBackend(settings.fake, backend_context(settings))
    built = await Runtime.build(settings, clock=FakeClock(), backend=fake)
    yield built
    await built.close()


@pytest.fixture
async def gateway(runtime: Runtime) -> AsyncIterator[Gateway]:
    built = Gateway(runtime)
    yield built
    await built.aclose()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _running(runtime: Runtime) -> tuple[str, Endpoint]:
    created = await runtime.service.create(principal=PRINCIPAL, body=_body("r"))
    await runtime.reconciler.settle()
    instance = await runtime.instances.load(created.id)
    assert instance is not None and instance.endpoint is not None
    return created.id, instance.endpoint


async def _put(gateway: Gateway, instance_id: str, endpoint: Endpoint) -> list[Message]:
    """A PUT with a body through the gateway, as if its kept row named ``endpoint``."""
    scope = {
        "type": "http", "method": "PUT", "scheme": "http", "client": ("127.0.0.1", 1),
        "path": f"/notebooks/{instance_id}/api/contents/a.ipynb", "query_string": b"",
        "headers": [(b"host", b"demanager.test"), (b"content-length", str(len(BODY)).encode())],
    }
    chunks = [BODY[:1000], BODY[1000:]]

    async def receive() -> Message:
        if chunks:
            chunk = chunks.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    target = _Target(scope, instance_id, "api/contents/a.ipynb")
    await asyncio.wait_for(gateway._http(target, endpoint, receive, send), 30)
    return sent


def _answer(sent: list[Message]) -> tuple[int, bytes]:
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], body


async def test_a_refused_kept_endpoint_sends_the_request_to_the_new_one(
    runtime: Runtime, gateway: Gateway
) -> None:
    instance_id, current = await _running(runtime)
    stale = replace(current, port=_closed_port())

    status, body = _answer(await _put(gateway, instance_id, stale))

    assert status == 200
    echoed = json.loads(body)
    assert echoed["method"] == "PUT" and echoed["body_bytes"] == len(BODY), "the whole body"


async def test_a_refusal_the_store_does_not_explain_is_answered_once(
    runtime: Runtime, gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    instance_id, current = await _running(runtime)
    gone = replace(current, port=_closed_port())
    running = await runtime.instances.load(instance_id)
    assert running is not None
    await runtime.instances.save(running, now_ms=running.updated_at, endpoint=gone)

    with caplog.at_level(logging.WARNING, logger="demanager.proxy.gateway"):
        status, body = _answer(await _put(gateway, instance_id, gone))

    assert status != 200
    assert json.loads(body)["error_code"].startswith("ModelArts.")
    told = [r.getMessage() for r in caplog.records if "did not answer" in r.getMessage()]
    assert len(told) == 1, "the operator is told why, once"
    assert f"PUT /notebooks/{instance_id}/api/contents/a.ipynb" in told[0]
    assert "Connect" in told[0], "with the connection's own error"


async def test_a_refused_endpoint_of_a_stopped_instance_is_not_retried(
    runtime: Runtime, gateway: Gateway
) -> None:
    instance_id, current = await _running(runtime)
    await runtime.service.act(principal=PRINCIPAL, instance_id=instance_id,
                              body={"action": "stop"})
    await runtime.reconciler.settle()

    status, body = _answer(await _put(gateway, instance_id, replace(current, port=_closed_port())))

    assert status != 200 and b"body_bytes" not in body
