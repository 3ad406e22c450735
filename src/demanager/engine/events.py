"""Reading the event log: pages for the API, live streams (server-sent events), and the
sweep's purge after the retention.

Streams read the store, never a message from another process. One reader per process
(``EventTail``) follows the log: the store's writer wakes it after each commit that
appended an event (``EventHub``), and it also looks every ``poll_seconds`` for what
another replica appended. Each new event is read once and handed to every stream whose
scope admits it, so a hundred streams cost one query per commit, not a hundred. A
stream first reads what it missed (after ``Last-Event-ID``) from the store itself,
then takes the tail's events; ids only grow, so "after the last id sent" is exactly
what it still owes, across the switch and across reconnections.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

from demanager import errors
from demanager.domain.events import Event
from demanager.engine.clock import Clock
from demanager.identity.principal import Principal
from demanager.store.events import EventFilter, EventRepository
from demanager.store.instances import InstanceRepository

log = logging.getLogger(__name__)

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
PURGE_INTERVAL_MS = 60_000
"""At most this often the sweep removes events older than the retention."""
STREAM_BATCH = 500


TAIL_QUEUE = 10_000
"""Events a stream may have waiting; a client that falls this far behind is cut off and
catches up from the store when it reconnects with ``Last-Event-ID``."""


class EventHub:
    """Wakes the streams of this process when an event was committed."""

    def __init__(self) -> None:
        self._waiters: set[asyncio.Event] = set()

    def publish(self) -> None:
        for waiter in self._waiters:
            waiter.set()

    @contextlib.contextmanager
    def subscribe(self) -> Iterator[asyncio.Event]:
        waiter = asyncio.Event()
        self._waiters.add(waiter)
        try:
            yield waiter
        finally:
            self._waiters.discard(waiter)


class _Subscriber:
    def __init__(self, scope: EventFilter) -> None:
        self.scope = scope
        # Unbounded as a queue; ``EventTail`` stops filling it at ``TAIL_QUEUE``, so
        # that the end of the stream always fits behind what it holds.
        self.queue: asyncio.Queue[tuple[int, str] | None] = asyncio.Queue()


class EventTail:
    """Follows the event log for the streams of this process: one read per wake-up (a
    local commit, or every ``poll_seconds`` for other replicas' commits), each new event
    framed once and queued to every stream that may see it. It runs while streams do."""

    def __init__(self, repository: EventRepository, hub: EventHub, poll_seconds: float) -> None:
        self._repo = repository
        self._hub = hub
        self._poll = poll_seconds
        self._subscribers: set[_Subscriber] = set()
        self._task: asyncio.Task[None] | None = None
        self._position = 0
        self._started = asyncio.Lock()

    async def subscribe(self, scope: EventFilter) -> tuple[_Subscriber, int]:
        """A new stream's queue, and the id up to which the tail read before it joined:
        the stream reads up to there from the store, and gets everything after from the
        queue."""
        async with self._started:
            subscriber = _Subscriber(scope)
            if self._task is None or self._task.done():
                self._position = await self._repo.latest_id()
                self._subscribers.add(subscriber)
                self._task = asyncio.create_task(self._follow(), name="event tail")
            else:
                self._subscribers.add(subscriber)
            return subscriber, self._position

    def unsubscribe(self, subscriber: _Subscriber) -> None:
        self._subscribers.discard(subscriber)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _follow(self) -> None:
        with self._hub.subscribe() as wake:
            while self._subscribers:
                wake.clear()  # before reading: a commit during the read wakes the next wait
                try:
                    found = await self._repo.tail(after=self._position, limit=STREAM_BATCH)
                except Exception:  # the store is away: streams wait, the tail tries again
                    log.warning("the event tail could not read the store", exc_info=True)
                    found = []
                for event in found:
                    self._deliver(event)
                    self._position = event.id
                if len(found) == STREAM_BATCH:
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), self._poll)

    def _deliver(self, event: Event) -> None:
        frame: str | None = None
        for subscriber in list(self._subscribers):
            if not subscriber.scope.admits(event):
                continue
            if subscriber.queue.qsize() >= TAIL_QUEUE:
                # Far behind: end its stream after what it holds, rather than hold ever
                # more for it; the client resumes from the store with Last-Event-ID.
                self._subscribers.discard(subscriber)
                subscriber.queue.put_nowait(None)
                continue
            frame = frame or sse_frame(event)
            subscriber.queue.put_nowait((event.id, frame))


def _whole(params: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise errors.InvalidValue(name, f"It must be a whole number from {low} to {high}.")
    value = int(raw)
    if not low <= value <= high:
        raise errors.InvalidValue(name, f"It must be a whole number from {low} to {high}.")
    return value


_NO_TOP = 2**62


def event_wire(event: Event) -> dict[str, Any]:
    return {
        "id": event.id,
        "instance_id": event.instance_id,
        "project_id": event.project_id,
        "at": event.at_ms,
        "kind": event.kind.value,
        "actor": event.actor,
        "message": event.message,
        "code": event.code,
        "detail": dict(event.detail),
    }


def sse_frame(event: Event) -> str:
    return f"id: {event.id}\ndata: {json.dumps(event_wire(event), separators=(',', ':'))}\n\n"


class EventService:
    def __init__(
        self,
        *,
        repository: EventRepository,
        instances: InstanceRepository,
        clock: Clock,
        retention_seconds: float,
        poll_seconds: float = 1.0,
        heartbeat_seconds: float = 15.0,
    ) -> None:
        self._repo = repository
        self._instances = instances
        self._clock = clock
        self._retention_ms = int(retention_seconds * 1000)
        self._poll = poll_seconds
        self._heartbeat = heartbeat_seconds
        self.closing = False
        """Set when the server shuts down: every stream ends within ``poll_seconds``
        (a plain flag, as a signal handler sets it)."""
        self.hub = EventHub()
        instances.on_event(self.hub.publish)
        self.tail = EventTail(repository, self.hub, poll_seconds)
        self._next_purge_ms = 0

    async def _scope(self, principal: Principal, instance_id: str | None) -> EventFilter:
        """What the caller may read: a member only their own instances' events; an
        instance only if they may see it, deleted ones included (their log outlives them)."""
        owner = principal.owner_filter()
        if instance_id is None:
            return EventFilter(principal.project_id, user_id=owner)
        instance = await self._instances.load(instance_id)
        if (
            instance is None
            or instance.project_id != principal.project_id
            or (owner is not None and instance.user_id != owner)
        ):
            raise errors.InstanceNotFound(instance_id)
        return EventFilter(principal.project_id, instance_id=instance_id)

    async def page(
        self, *, principal: Principal, params: Mapping[str, str], instance_id: str | None = None
    ) -> dict[str, Any]:
        limit = _whole(params, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        offset = _whole(params, "offset", 0, 0, _NO_TOP)
        after = _whole(params, "after", 0, 0, _NO_TOP)
        scope = await self._scope(principal, instance_id)
        total, found = await self._repo.page(scope, limit=limit, offset=offset, after=after)
        return {"total": total, "events": [event_wire(e) for e in found]}

    async def open_stream(
        self,
        *,
        principal: Principal,
        params: Mapping[str, str],
        last_event_id: str | None,
        instance_id: str | None = None,
    ) -> AsyncIterator[str]:
        """Check the request (errors answer before the stream starts), then the stream:
        what came after ``Last-Event-ID`` (or ``after``), else only what comes next."""
        after = _whole(params, "after", -1, 0, _NO_TOP)
        if last_event_id is not None:
            after = _whole({"Last-Event-ID": last_event_id.strip()}, "Last-Event-ID", 0, 0,
                           _NO_TOP)
        scope = await self._scope(principal, instance_id)
        if after < 0:
            after = await self._repo.latest_id(scope)
        return self._stream(scope, after)

    async def _stream(self, scope: EventFilter, after: int) -> AsyncIterator[str]:
        subscriber, joined_at = await self.tail.subscribe(scope)
        try:
            # Tells EventSource how soon to reconnect, and the client the stream is open.
            yield "retry: 1000\n: open\n\n"
            while after < joined_at and not self.closing:  # what it missed, from the store
                found = await self._repo.tail(after=after, limit=STREAM_BATCH, scope=scope)
                found = [event for event in found if event.id <= joined_at]
                for event in found:
                    yield sse_frame(event)
                    after = event.id
                if len(found) < STREAM_BATCH:
                    break
            beat = time.monotonic()
            while not self.closing:
                until_beat = beat + self._heartbeat - time.monotonic()
                try:
                    item = await asyncio.wait_for(
                        subscriber.queue.get(), max(0.0, min(self._poll, until_beat))
                    )
                except TimeoutError:
                    if time.monotonic() - beat >= self._heartbeat:
                        yield ": keep-alive\n\n"
                        beat = time.monotonic()
                    continue
                # Whatever else is waiting goes out in the same write: one send per
                # burst, not per event, when many streams are busy at once.
                frames = []
                while item is not None:
                    event_id, frame = item
                    if event_id > after:
                        frames.append(frame)
                        after = event_id
                    if subscriber.queue.empty() or len(frames) >= STREAM_BATCH:
                        break
                    item = subscriber.queue.get_nowait()
                if frames:
                    yield "".join(frames)
                if item is None:  # cut off for falling behind
                    return
        finally:
            self.tail.unsubscribe(subscriber)

    async def purge(self) -> int:
        """Remove the events past the retention (at most once per ``PURGE_INTERVAL_MS``)."""
        now = self._clock.now_ms()
        if now < self._next_purge_ms:
            return 0
        self._next_purge_ms = now + PURGE_INTERVAL_MS
        purged = await self._repo.purge(before_ms=now - self._retention_ms)
        if purged:
            log.info("purged %d events older than %d s", purged, self._retention_ms // 1000)
        return purged
