"""The blocking client: ``Client``.

Every method is one ``Call`` from ``_calls`` sent through ``_send``; only
waiting and paging add a loop. See ``_async`` for the same surface with
``await``.
"""

from __future__ import annotations

import builtins
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar

import httpx

from demanager.client._calls import (
    DEFAULT_TIMEOUT,
    Call,
    Calls,
    Order,
    SortBy,
    headers_for,
    next_offset,
)
from demanager.client._config import ClientConfig
from demanager.client._following import STREAM_READ_TIMEOUT, Follower
from demanager.client._sse import SSEDecoder
from demanager.client._waiting import (
    EVENT_GRACE,
    EventCallback,
    ProgressCallback,
    Waiter,
    targets_of,
)
from demanager.client.exceptions import (
    InstanceNotFound,
    ServerBusy,
    ServerError,
    TransportError,
    error_from_response,
)
from demanager.schemas.events import Event, EventPage
from demanager.schemas.instances import (
    ActionResponse,
    AutoStopRequest,
    DeleteResponse,
    FlavorDetails,
    Instance,
    InstanceList,
    Profile,
    RunStops,
    SignedUrlResponse,
    Storage,
)

T = TypeVar("T")


class Client:
    """A connection to one demanager server, acting in one project.

    Settings not given here come from the environment or the config file
    written by ``demanager login`` (see ``_config``). Pass ``transport=`` to
    talk to an in-process app or an ``httpx.MockTransport`` in tests.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        project: str | None = None,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
        config_path: Path | str | None = None,
    ) -> None:
        self.config = ClientConfig.resolve(
            url=url, project=project, token=token, config_path=config_path
        )
        self._calls = Calls(self.config.project)
        self._http = httpx.Client(
            base_url=self.config.url,
            headers=headers_for(self.config),
            timeout=timeout,
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"Client(url={self.config.url!r}, project={self.config.project!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, call: Call[T]) -> T:
        try:
            response = self._http.send(call.request(self._http))
        except httpx.TransportError as exc:
            raise TransportError(f"cannot reach {self.config.url}: {exc}") from exc
        return call.answer(response)

    # -- instances ---------------------------------------------------------

    def create(
        self,
        name: str,
        *,
        profile_id: str,
        flavor: str,
        storage: Storage | None = None,
        description: str | None = None,
        auto_stop: int | AutoStopRequest | None = None,
        annotations: Mapping[str, str] | None = None,
        extend_storage: Sequence[Storage] | None = None,
        workspace_id: str | None = None,
        pool_id: str | None = None,
        ai_project: str | None = None,
    ) -> Instance:
        """Create an instance; it comes back ``CREATING`` and starts in the background.

        ``storage`` defaults to a 5 GB EVS volume; ``auto_stop`` in seconds
        turns auto-stop on with that duration.
        """
        return self._send(
            self._calls.create(
                name,
                profile_id=profile_id,
                flavor=flavor,
                storage=storage,
                description=description,
                auto_stop=auto_stop,
                annotations=annotations,
                extend_storage=extend_storage,
                workspace_id=workspace_id,
                pool_id=pool_id,
                ai_project=ai_project,
            )
        )

    def list(
        self,
        *,
        de_type: str = "Notebook",
        status: str | None = None,
        sortby: SortBy | None = None,
        order: Order | None = None,
        offset: int | None = None,
        limit: int | None = None,
        workspace_id: str | None = None,
        show_self: bool | None = None,
        ai_project: str | None = None,
        pool_id: str | None = None,
        provision_type: str | None = None,
    ) -> InstanceList:
        """One page of instances (contract §6); ``limit=0`` or ``None`` means all."""
        return self._send(
            self._calls.list(
                de_type=de_type,
                status=status,
                sortby=sortby,
                order=order,
                offset=offset,
                limit=limit,
                workspace_id=workspace_id,
                show_self=show_self,
                ai_project=ai_project,
                pool_id=pool_id,
                provision_type=provision_type,
            )
        )

    def iter_instances(
        self,
        *,
        status: str | None = None,
        sortby: SortBy | None = None,
        order: Order | None = None,
        workspace_id: str | None = None,
        show_self: bool | None = None,
        ai_project: str | None = None,
        pool_id: str | None = None,
        provision_type: str | None = None,
        page_size: int = 100,
    ) -> Iterator[Instance]:
        """Every matching instance, fetched ``page_size`` at a time."""
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        offset: int | None = 0
        while offset is not None:
            page = self.list(
                status=status,
                sortby=sortby,
                order=order,
                offset=offset,
                limit=page_size,
                workspace_id=workspace_id,
                show_self=show_self,
                ai_project=ai_project,
                pool_id=pool_id,
                provision_type=provision_type,
            )
            yield from page.instances
            offset = next_offset(page, offset)

    def find(self, name: str, *, workspace_id: str | None = None) -> Instance | None:
        """The live instance called ``name`` in the project (any owner), if there is one."""
        for instance in self.iter_instances(show_self=False, workspace_id=workspace_id):
            if instance.name == name:
                return instance
        return None

    def get(self, instance_id: str) -> Instance:
        return self._send(self._calls.get(instance_id))

    def update(
        self,
        instance_id: str,
        *,
        description: str | None = None,
        auto_stop: int | AutoStopRequest | None = None,
    ) -> Instance:
        """Change the description and/or auto-stop.

        ``auto_stop`` in seconds turns it on; ``AutoStopRequest(enable=False)`` turns it off.
        """
        return self._send(
            self._calls.update(instance_id, description=description, auto_stop=auto_stop)
        )

    def delete(self, instance_id: str) -> DeleteResponse:
        """Delete a stopped (or failed) instance and its EVS volume."""
        return self._send(self._calls.delete(instance_id))

    def start(self, instance_id: str) -> ActionResponse:
        return self._send(self._calls.action(instance_id, "start"))

    def stop(self, instance_id: str) -> ActionResponse:
        return self._send(self._calls.action(instance_id, "stop"))

    def restart(self, instance_id: str) -> ActionResponse:
        return self._send(self._calls.action(instance_id, "restart"))

    def queue(self, instance_id: str) -> ActionResponse:
        """Free flavors only: enter the start queue."""
        return self._send(self._calls.action(instance_id, "queue"))

    def dequeue(self, instance_id: str) -> ActionResponse:
        """Free flavors only: leave the start queue."""
        return self._send(self._calls.action(instance_id, "dequeue"))

    def token(self, instance_id: str) -> str:
        """A credential that opens a running instance's notebook through the server's
        proxy (optional route 7): ``?token=`` on a notebook URL, or
        ``Authorization: token …``. Never the notebook server's own token."""
        return self._send(self._calls.token(instance_id))

    def signed_url(self, instance_id: str) -> SignedUrlResponse:
        """A short-lived link that opens the notebook in a browser without signing in
        (extension route)."""
        return self._send(self._calls.signed_url(instance_id))

    def stops(self, instance_id: str) -> RunStops:
        """When the current run will stop, and why (extension route)."""
        return self._send(self._calls.stops(instance_id))

    def extend(self, instance_id: str, seconds: int) -> RunStops:
        """Postpone every stop of the current run by ``seconds``, within the operator's
        limit per run (extension route)."""
        return self._send(self._calls.extend(instance_id, seconds))

    # -- catalog (extension routes) ----------------------------------------

    def profiles(self) -> builtins.list[Profile]:
        return self._send(self._calls.profiles())

    def flavors(self) -> builtins.list[FlavorDetails]:
        return self._send(self._calls.flavors())

    # -- events (extension routes, docs/events.md) ---------------------------

    def events(
        self,
        instance_id: str | None = None,
        *,
        after: int | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> EventPage:
        """One page of an instance's events (the project's without ``instance_id``),
        oldest first; ``after`` keeps only events with a greater id."""
        return self._send(self._calls.events(instance_id, after=after, limit=limit, offset=offset))

    def latest_event_id(self, instance_id: str | None = None) -> int:
        """The id of the newest event so far (0 if none): ``follow_events(after=…)``
        then shows exactly what happens from now on."""
        total = self.events(instance_id, limit=1).total
        if total == 0:
            return 0
        page = self.events(instance_id, limit=1, offset=total - 1)
        return page.events[-1].id if page.events else 0

    def follow_events(
        self, instance_id: str | None = None, *, after: int | None = None, retries: int = 5
    ) -> Iterator[Event]:
        """Events as they happen, from the server-sent event stream.

        Without ``after`` the stream starts with the next event; with it, with the
        events after that id. A dropped connection is opened again with
        ``Last-Event-ID``, so no event is lost or repeated; ``TransportError`` ends
        the iteration once ``retries`` reconnects in a row failed. Closing the
        iterator (``break``, ``close()``) closes the connection.
        """
        return self._follow(instance_id, Follower(after=after, retries=retries), None)

    def _follow(
        self, instance_id: str | None, follower: Follower, stopped: threading.Event | None
    ) -> Iterator[Event]:
        """``follow_events``; ``stopped`` ends it from another thread, at the latest
        with the stream's next line (a keep-alive comes every 15 s)."""
        path = f"{self._calls.events_path(instance_id)}/stream"
        timeout = self._http.timeout.as_dict() | {"read": STREAM_READ_TIMEOUT}
        while stopped is None or not stopped.is_set():
            decoder = SSEDecoder(follower.last_event_id)
            error: Exception | None = None
            try:
                with self._http.stream(
                    "GET", path, headers=follower.headers(), timeout=httpx.Timeout(**timeout)
                ) as response:
                    if not response.is_success:
                        response.read()
                        raise error_from_response(response)
                    follower.connected()
                    for line in response.iter_lines():
                        if stopped is not None and stopped.is_set():
                            return
                        message = decoder.feed(line)
                        event = follower.read(message) if message is not None else None
                        if event is not None:
                            yield event
            except httpx.TransportError as exc:
                error = TransportError(f"event stream from {self.config.url}: {exc}")
            except (ServerBusy, ServerError) as exc:
                error = exc
            delay = follower.next_delay(error, decoder.retry_ms)
            if stopped is None:
                time.sleep(delay)
            else:
                stopped.wait(delay)

    # -- waiting ------------------------------------------------------------

    def wait_until(
        self,
        instance_id: str,
        status: str | Iterable[str],
        *,
        timeout: float = 600.0,
        on_progress: ProgressCallback | None = None,
        interval: float = 0.5,
        max_interval: float = 5.0,
        on_event: EventCallback | None = None,
        events_after: int | None = None,
    ) -> Instance:
        """Poll until the instance has one of the ``status`` values and return it.

        Raises ``WaitTimeout`` at the deadline and ``InstanceFailed`` when the
        instance lands in a failed status that is not a target.
        ``on_progress`` sees every instance read on the way.

        With ``on_event``, the instance's event stream is followed too (from
        ``events_after``, else from now): each event is handed to ``on_event`` as
        it arrives and the status is read at once, so the wait ends as soon as the
        change happened. The status stays the judge; should the stream fail, the
        polling goes on alone.
        """
        waiter = Waiter(
            instance_id,
            targets_of(status),
            timeout=timeout,
            interval=interval,
            max_interval=max_interval,
        )
        feed = _EventFeed(self, instance_id, events_after) if on_event is not None else None
        try:
            while True:
                try:
                    instance = self.get(instance_id)
                except ServerBusy:
                    pass  # the contract says "retry later": that is what the loop does
                else:
                    if on_progress is not None:
                        on_progress(instance)
                    if waiter.reached(instance):
                        if feed is not None and on_event is not None:
                            # The event of the change itself is written with it: show it.
                            feed.deliver(on_event, wait=EVENT_GRACE)
                        return instance
                delay = waiter.next_delay()
                if feed is None or on_event is None:
                    time.sleep(delay)
                else:
                    feed.deliver(on_event, wait=delay, first_only=True)
        finally:
            if feed is not None:
                feed.close()

    def wait_until_deleted(
        self, instance_id: str, *, timeout: float = 600.0, interval: float = 0.5
    ) -> None:
        """Poll until the instance is gone from every view (GET answers 6309)."""
        waiter = Waiter(
            instance_id,
            frozenset({"DELETED"}),
            timeout=timeout,
            interval=interval,
            max_interval=max(interval, 5.0),
        )
        while True:
            try:
                waiter.last_status = self.get(instance_id).status
            except InstanceNotFound:
                return
            except ServerBusy:
                pass
            time.sleep(waiter.next_delay())


class _EventFeed:
    """An instance's event stream, read by a daemon thread into a queue so that
    ``wait_until`` can sleep until either its next poll or the next event."""

    def __init__(self, client: Client, instance_id: str, after: int | None) -> None:
        self._queue: queue.Queue[Event] = queue.Queue()
        self._stop = threading.Event()
        self._events = client._follow(instance_id, Follower(after=after, retries=2), self._stop)
        self._thread = threading.Thread(
            target=self._pump, name=f"events-{instance_id}", daemon=True
        )
        self._thread.start()

    def _pump(self) -> None:
        try:
            for event in self._events:
                self._queue.put(event)
        except Exception:  # the polling goes on without the stream
            return

    def deliver(
        self, callback: Callable[[Event], object], *, wait: float, first_only: bool = False
    ) -> None:
        """Wait up to ``wait`` s for an event and hand it, with any queued behind it, to
        ``callback``; unless ``first_only``, listen again ``wait`` s after each batch."""
        while True:
            try:
                event = self._queue.get(timeout=max(wait, 0.0))
            except queue.Empty:
                return
            callback(event)
            while True:
                try:
                    callback(self._queue.get_nowait())
                except queue.Empty:
                    break
            if first_only:
                return

    def close(self) -> None:
        # The thread may be blocked reading the stream: it ends at the stream's next
        # line (a keep-alive at the latest), or with the process (daemon).
        self._stop.set()
