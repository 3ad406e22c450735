"""The asyncio client: ``AsyncClient``, the same surface as ``Client`` with ``await``.

Requests and answers are built and read by ``_calls``, waiting decisions by
``_waiting``; this module only sends and sleeps.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
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


class AsyncClient:
    """An asyncio connection to one demanager server, acting in one project.

    Configured like ``Client``; ``transport=`` takes an
    ``httpx.AsyncBaseTransport`` (``httpx.ASGITransport(app)``, ``MockTransport``).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        project: str | None = None,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
        config_path: Path | str | None = None,
    ) -> None:
        self.config = ClientConfig.resolve(
            url=url, project=project, token=token, config_path=config_path
        )
        self._calls = Calls(self.config.project)
        self._http = httpx.AsyncClient(
            base_url=self.config.url,
            headers=headers_for(self.config),
            timeout=timeout,
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"AsyncClient(url={self.config.url!r}, project={self.config.project!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, call: Call[T]) -> T:
        try:
            response = await self._http.send(call.request(self._http))
        except httpx.TransportError as exc:
            raise TransportError(f"cannot reach {self.config.url}: {exc}") from exc
        return call.answer(response)

    # -- instances ---------------------------------------------------------

    async def create(
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
        return await self._send(
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

    async def list(
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
        return await self._send(
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

    async def iter_instances(
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
    ) -> AsyncIterator[Instance]:
        """Every matching instance, fetched ``page_size`` at a time."""
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        offset: int | None = 0
        while offset is not None:
            page = await self.list(
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
            for instance in page.instances:
                yield instance
            offset = next_offset(page, offset)

    async def find(self, name: str, *, workspace_id: str | None = None) -> Instance | None:
        """The live instance called ``name`` in the project (any owner), if there is one."""
        async for instance in self.iter_instances(show_self=False, workspace_id=workspace_id):
            if instance.name == name:
                return instance
        return None

    async def get(self, instance_id: str) -> Instance:
        return await self._send(self._calls.get(instance_id))

    async def update(
        self,
        instance_id: str,
        *,
        description: str | None = None,
        auto_stop: int | AutoStopRequest | None = None,
    ) -> Instance:
        """Change the description and/or auto-stop.

        ``auto_stop`` in seconds turns it on; ``AutoStopRequest(enable=False)`` turns it off.
        """
        return await self._send(
            self._calls.update(instance_id, description=description, auto_stop=auto_stop)
        )

    async def delete(self, instance_id: str) -> DeleteResponse:
        """Delete a stopped (or failed) instance and its EVS volume."""
        return await self._send(self._calls.delete(instance_id))

    async def start(self, instance_id: str) -> ActionResponse:
        return await self._send(self._calls.action(instance_id, "start"))

    async def stop(self, instance_id: str) -> ActionResponse:
        return await self._send(self._calls.action(instance_id, "stop"))

    async def restart(self, instance_id: str) -> ActionResponse:
        return await self._send(self._calls.action(instance_id, "restart"))

    async def queue(self, instance_id: str) -> ActionResponse:
        """Free flavors only: enter the start queue."""
        return await self._send(self._calls.action(instance_id, "queue"))

    async def dequeue(self, instance_id: str) -> ActionResponse:
        """Free flavors only: leave the start queue."""
        return await self._send(self._calls.action(instance_id, "dequeue"))

    async def token(self, instance_id: str) -> str:
        """A credential that opens a running instance's notebook through the server's
        proxy (optional route 7): ``?token=`` on a notebook URL, or
        ``Authorization: token …``. Never the notebook server's own token."""
        return await self._send(self._calls.token(instance_id))

    async def signed_url(self, instance_id: str) -> SignedUrlResponse:
        """A short-lived link that opens the notebook in a browser without signing in
        (extension route)."""
        return await self._send(self._calls.signed_url(instance_id))

    async def stops(self, instance_id: str) -> RunStops:
        """When the current run will stop, and why (extension route)."""
        return await self._send(self._calls.stops(instance_id))

    async def extend(self, instance_id: str, seconds: int) -> RunStops:
        """Postpone every stop of the current run by ``seconds``, within the operator's
        limit per run (extension route)."""
        return await self._send(self._calls.extend(instance_id, seconds))

    # -- catalog (extension routes) ----------------------------------------

    async def profiles(self) -> builtins.list[Profile]:
        return await self._send(self._calls.profiles())

    async def flavors(self) -> builtins.list[FlavorDetails]:
        return await self._send(self._calls.flavors())

    # -- events (extension routes, docs/events.md) ---------------------------

    async def events(
        self,
        instance_id: str | None = None,
        *,
        after: int | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> EventPage:
        """One page of an instance's events (the project's without ``instance_id``),
        oldest first; ``after`` keeps only events with a greater id."""
        return await self._send(
            self._calls.events(instance_id, after=after, limit=limit, offset=offset)
        )

    async def latest_event_id(self, instance_id: str | None = None) -> int:
        """The id of the newest event so far (0 if none)."""
        total = (await self.events(instance_id, limit=1)).total
        if total == 0:
            return 0
        page = await self.events(instance_id, limit=1, offset=total - 1)
        return page.events[-1].id if page.events else 0

    async def follow_events(
        self, instance_id: str | None = None, *, after: int | None = None, retries: int = 5
    ) -> AsyncIterator[Event]:
        """Events as they happen; see ``Client.follow_events``."""
        follower = Follower(after=after, retries=retries)
        path = f"{self._calls.events_path(instance_id)}/stream"
        timeout = self._http.timeout.as_dict() | {"read": STREAM_READ_TIMEOUT}
        while True:
            decoder = SSEDecoder(follower.last_event_id)
            error: Exception | None = None
            try:
                async with self._http.stream(
                    "GET", path, headers=follower.headers(), timeout=httpx.Timeout(**timeout)
                ) as response:
                    if not response.is_success:
                        await response.aread()
                        raise error_from_response(response)
                    follower.connected()
                    async for line in response.aiter_lines():
                        message = decoder.feed(line)
                        event = follower.read(message) if message is not None else None
                        if event is not None:
                            yield event
            except httpx.TransportError as exc:
                error = TransportError(f"event stream from {self.config.url}: {exc}")
            except (ServerBusy, ServerError) as exc:
                error = exc
            await asyncio.sleep(follower.next_delay(error, decoder.retry_ms))

    # -- waiting ------------------------------------------------------------

    async def wait_until(
        self,
        instance_id: str,
        status: str | Iterable[str],
        *,
        # Not asyncio.timeout(): the deadline must end in a WaitTimeout that
        # names the last status seen, the same as the sync client.
        timeout: float = 600.0,  # noqa: ASYNC109
        on_progress: ProgressCallback | None = None,
        interval: float = 0.5,
        max_interval: float = 5.0,
        on_event: EventCallback | None = None,
        events_after: int | None = None,
    ) -> Instance:
        """Poll until the instance has one of the ``status`` values and return it.

        Raises ``WaitTimeout`` at the deadline and ``InstanceFailed`` when the
        instance lands in a failed status that is not a target.
        ``on_progress`` sees every instance read on the way; ``on_event`` the
        instance's events as they happen (see ``Client.wait_until``).
        """
        waiter = Waiter(
            instance_id,
            targets_of(status),
            timeout=timeout,
            interval=interval,
            max_interval=max_interval,
        )
        feed: asyncio.Queue[Event] = asyncio.Queue()
        pump = (
            asyncio.create_task(self._pump_events(instance_id, events_after, feed))
            if on_event is not None
            else None
        )
        try:
            while True:
                try:
                    instance = await self.get(instance_id)
                except ServerBusy:
                    pass  # the contract says "retry later": that is what the loop does
                else:
                    if on_progress is not None:
                        on_progress(instance)
                    if waiter.reached(instance):
                        if on_event is not None:
                            # The event of the change itself is written with it: show it.
                            await _deliver(feed, on_event, wait=EVENT_GRACE)
                        return instance
                delay = waiter.next_delay()
                if on_event is None:
                    await asyncio.sleep(delay)
                else:
                    await _deliver(feed, on_event, wait=delay, first_only=True)
        finally:
            if pump is not None:
                pump.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pump

    async def _pump_events(
        self, instance_id: str, after: int | None, feed: asyncio.Queue[Event]
    ) -> None:
        try:
            async for event in self.follow_events(instance_id, after=after, retries=2):
                feed.put_nowait(event)
        except Exception:  # the polling goes on without the stream
            return

    async def wait_until_deleted(
        self,
        instance_id: str,
        *,
        timeout: float = 600.0,  # noqa: ASYNC109 (see wait_until)
        interval: float = 0.5,
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
                waiter.last_status = (await self.get(instance_id)).status
            except InstanceNotFound:
                return
            except ServerBusy:
                pass
            await asyncio.sleep(waiter.next_delay())


async def _deliver(
    feed: asyncio.Queue[Event],
    callback: Callable[[Event], object],
    *,
    wait: float,
    first_only: bool = False,
) -> None:
    """Wait up to ``wait`` s for an event and hand it, with any queued behind it, to
    ``callback``; unless ``first_only``, listen again ``wait`` s after each batch."""
    while True:
        try:
            event = await asyncio.wait_for(feed.get(), max(wait, 0.0))
        except TimeoutError:
            return
        callback(event)
        while not feed.empty():
            callback(feed.get_nowait())
        if first_only:
            return
