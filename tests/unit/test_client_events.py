"""The SDK's event log: the server-sent events parser, the reconnect pacing, pages,
following a stream across dropped connections, and waits that end on an event."""

from __future__ import annotations

import json
import random
from typing import Any

import httpx
import pytest

from demanager.client import (
    AsyncClient,
    Client,
    Event,
    InstanceNotFound,
    RouteNotFound,
    TransportError,
)
from demanager.client._following import Follower
from demanager.client._sse import ServerSentEvent, SSEDecoder
from tests.unit.sdk_fakes import PROJECT, TOKEN, FakeApi


def decode(*lines: str) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    return [m for line in lines if (m := decoder.feed(line)) is not None]


# --- parsing -------------------------------------------------------------------------------


def test_messages_end_at_blank_lines_and_join_their_data_lines() -> None:
    found = decode("id: 7", 'data: {"a":', "data:  1}", "", "data: next", "")
    assert found == [
        ServerSentEvent(data='{"a":\n 1}', id="7"),
        ServerSentEvent(data="next", id="7"),  # the id persists until changed
    ]


def test_comments_retry_and_unknown_fields() -> None:
    decoder = SSEDecoder()
    assert decoder.feed("retry: 1000") is None
    assert decoder.feed(": open") is None
    assert decoder.feed("") is None, "no data: nothing to dispatch"
    assert decoder.retry_ms == 1000
    for line in ("retry: soon", "colour: blue", "event: ping", "data", ""):
        message = decoder.feed(line)
    assert message == ServerSentEvent(data="", event="ping", retry_ms=1000)
    assert decoder.retry_ms == 1000, "a bad retry value is ignored"


def test_an_id_with_a_nul_is_ignored_and_line_ends_are_stripped() -> None:
    decoder = SSEDecoder(last_event_id="3")
    decoder.feed("id: 4\0")
    decoder.feed("data:x\r\n")
    assert decoder.feed("\r\n") == ServerSentEvent(data="x", id="3")


# --- reconnect pacing ------------------------------------------------------------------


def test_follower_resumes_from_the_last_event_read() -> None:
    follower = Follower(after=None, retries=1)
    assert "Last-Event-ID" not in follower.headers()
    event = {"id": 12, "instance_id": "DE-1", "at": 1, "kind": "launched"}
    got = follower.read(ServerSentEvent(data=json.dumps(event), id="12"))
    assert got is not None and got.kind == "launched"
    assert follower.headers()["Last-Event-ID"] == "12"
    assert follower.read(ServerSentEvent(data="{}", event="ping")) is None


def test_follower_backs_off_then_gives_up() -> None:
    follower = Follower(after=5, retries=2, rng=random.Random(1))
    assert follower.headers()["Last-Event-ID"] == "5"
    first = follower.next_delay(None, retry_ms=200)
    second = follower.next_delay(None)
    assert 0.15 <= first <= 0.25 and 0.3 <= second <= 0.5
    with pytest.raises(TransportError, match="closed 3 times in a row"):
        follower.next_delay(None)
    follower.connected()
    assert follower.next_delay(None) <= 0.25, "a connection resets the count"


def test_an_unknown_kind_is_an_event_like_any_other() -> None:
    follower = Follower(after=None, retries=0)
    body = {
        "id": 1,
        "instance_id": "DE-1",
        "at": 5,
        "kind": "extended",
        "message": "Extended by one hour.",
        "detail": {"by_s": 3600},
        "new_field": True,
    }
    event = follower.read(ServerSentEvent(data=json.dumps(body)))
    assert event is not None and event.kind == "extended" and event.detail == {"by_s": 3600}


# --- the clients ---------------------------------------------------------------------------


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


def client_of(api: FakeApi) -> Client:
    return Client("http://dm.test", project=PROJECT, token=TOKEN, transport=api.transport())


def test_pages_and_the_latest_id(api: FakeApi) -> None:
    nb = api.add()
    for kind in ("created", "launched", "ready"):
        api.log(nb["id"], kind, f"{kind}.")
    with client_of(api) as client:
        page = client.events(nb["id"], after=1, limit=1)
        assert page.total == 2 and [e.kind for e in page.events] == ["launched"]
        assert client.latest_event_id(nb["id"]) == 3
    assert dict(api.requests[0].url.params) == {"after": "1", "limit": "1"}
    assert api.requests[0].url.path.endswith(f"/instances/{nb['id']}/events")


def test_follow_reconnects_with_the_last_event_id(api: FakeApi) -> None:
    nb = api.add()
    api.log(nb["id"], "created", "Created.")
    api.log(nb["id"], "launched", "Launched.")
    seen: list[Event] = []
    with client_of(api) as client:
        for event in client.follow_events(nb["id"], after=0):
            seen.append(event)
            if event.kind == "launched":
                # Written while the client is between two connections.
                api.log(nb["id"], "ready", "Ready.", start_ms=1800)
            if event.kind == "ready":
                break
    assert [e.kind for e in seen] == ["created", "launched", "ready"]
    assert seen[-1].detail == {"start_ms": 1800}
    assert [r.headers["Last-Event-ID"] for r in api.streams()] == ["0", "2"]
    assert api.streams()[0].headers["Accept"] == "text/event-stream"


def test_follow_ends_on_refusals_and_after_failed_retries(api: FakeApi) -> None:
    with client_of(api) as client, pytest.raises(InstanceNotFound):
        next(client.follow_events("DE-missing"))
    nb = api.add()
    api.stream_error = httpx.ConnectError("refused")
    with client_of(api) as client, pytest.raises(TransportError, match="refused"):
        next(client.follow_events(nb["id"], retries=1))
    assert len(api.streams()) == 1 + 2, "the refusal once, then a try and one retry"


async def test_async_follow_and_pages(api: FakeApi) -> None:
    nb = api.add()
    api.log(nb["id"], "created", "Created.")
    api.log(nb["id"], "launched", "Launched.")

    async def answer(request: httpx.Request) -> httpx.Response:
        return api(request)

    async with AsyncClient(
        "http://dm.test", project=PROJECT, token=TOKEN, transport=httpx.MockTransport(answer)
    ) as client:
        assert (await client.events(nb["id"])).total == 2
        assert await client.latest_event_id(nb["id"]) == 2
        kinds = []
        async for event in client.follow_events(nb["id"], after=0):
            kinds.append(event.kind)
            if len(kinds) == 2:
                break
    assert kinds == ["created", "launched"]


def test_wait_hands_events_over_and_the_status_decides(api: FakeApi) -> None:
    nb = api.add("STOPPED")
    api.script[nb["id"]] = ["STARTING", "STARTING", "RUNNING"]
    api.log(nb["id"], "stopped", "Stopped.")
    api.log(nb["id"], "start_requested", "Start requested.")
    api.log(nb["id"], "launched", "Launched.")
    seen: list[str] = []
    with client_of(api) as client:
        final = client.wait_until(
            nb["id"],
            "RUNNING",
            interval=0.01,
            max_interval=0.02,
            on_event=lambda event: seen.append(event.kind),
            events_after=1,
        )
    assert final.status == "RUNNING"
    assert seen[:2] == ["start_requested", "launched"], "from events_after on, in order"
    assert api.streams()[0].headers["Last-Event-ID"] == "1"


def test_wait_polls_alone_when_the_server_has_no_stream() -> None:
    api = FakeApi()
    nb = api.add("STOPPED")
    api.script[nb["id"]] = ["STARTING", "RUNNING"]

    def old_server(request: httpx.Request) -> httpx.Response:
        if "/events" in request.url.path:
            return httpx.Response(
                404, json={"error_code": "ModelArts.2836", "error_message": "path not found"}
            )
        return api(request)

    seen: list[Any] = []
    with Client(
        "http://dm.test", project=PROJECT, token=TOKEN, transport=httpx.MockTransport(old_server)
    ) as client:
        final = client.wait_until(
            nb["id"], "RUNNING", interval=0.01, max_interval=0.02, on_event=seen.append
        )
        with pytest.raises(RouteNotFound):
            client.events(nb["id"])
    assert final.status == "RUNNING" and seen == []


async def test_async_wait_hands_events_over(api: FakeApi) -> None:
    nb = api.add("STOPPED")
    api.script[nb["id"]] = ["STARTING", "STARTING", "RUNNING"]
    api.log(nb["id"], "start_requested", "Start requested.")
    api.log(nb["id"], "launched", "Launched.")

    async def answer(request: httpx.Request) -> httpx.Response:
        return api(request)

    seen: list[str] = []
    async with AsyncClient(
        "http://dm.test", project=PROJECT, token=TOKEN, transport=httpx.MockTransport(answer)
    ) as client:
        final = await client.wait_until(
            nb["id"], "RUNNING", interval=0.01, max_interval=0.02,
            on_event=lambda event: seen.append(event.kind), events_after=0,
        )  # fmt: skip
    assert final.status == "RUNNING"
    assert seen[:2] == ["start_requested", "launched"]
