"""The decisions of ``follow_events``, shared by the sync and async clients.

Following is a loop of "open the stream, read messages, and when the connection
drops, wait and open it again with ``Last-Event-ID``" (what a browser's
``EventSource`` does). This module holds the state of that loop: the last id
read, how long to wait before the next connection, and when to give up. Each
client supplies only its own connect, read and sleep.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

from pydantic import ValidationError

from demanager.client._sse import ServerSentEvent
from demanager.client.exceptions import TransportError, UnexpectedResponse
from demanager.schemas.events import Event

#: A stream sends a keep-alive every 15 s; three missed ones mean the link is dead.
STREAM_READ_TIMEOUT = 45.0
DEFAULT_RETRY_S = 1.0
MAX_RETRY_S = 30.0


class Follower:
    """Resume point and reconnect pacing of one ``follow_events`` call."""

    def __init__(
        self, *, after: int | None, retries: int, rng: random.Random | None = None
    ) -> None:
        if retries < 0:
            raise ValueError("retries must be >= 0")
        self.last_event_id: str | None = str(after) if after is not None else None
        self.retries = retries
        self._failures = 0
        self._retry_s = DEFAULT_RETRY_S
        self._rng = rng or random.Random()

    def headers(self) -> Mapping[str, str]:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if self.last_event_id is not None:
            headers["Last-Event-ID"] = self.last_event_id
        return headers

    def connected(self) -> None:
        """A stream opened: the count of failures in a row starts again."""
        self._failures = 0

    def read(self, message: ServerSentEvent) -> Event | None:
        """The event a message carries; remembers where to resume."""
        if message.event != "message":
            return None
        try:
            event = Event.model_validate_json(message.data)
        except ValidationError as exc:
            raise UnexpectedResponse(
                f"an event of the stream is not an event: {exc}", http_status=200
            ) from exc
        self.last_event_id = message.id if message.id is not None else str(event.id)
        return event

    def next_delay(self, error: Exception | None, retry_ms: int | None = None) -> float:
        """Seconds before reconnecting, or the error once ``retries`` failed in a row.

        A stream the server ended cleanly (it shuts down, or a proxy cut it) counts
        as a failure too, so a server that closes every stream at once cannot make
        the client spin.
        """
        if retry_ms is not None:
            self._retry_s = min(max(retry_ms / 1000, 0.1), MAX_RETRY_S)
        self._failures += 1
        if self._failures > self.retries:
            if isinstance(error, TransportError):
                raise error
            raise TransportError(
                f"the event stream closed {self._failures} times in a row"
            ) from error
        nominal = min(self._retry_s * 2 ** (self._failures - 1), MAX_RETRY_S)
        return float(nominal * self._rng.uniform(0.75, 1.25))
