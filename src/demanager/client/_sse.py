"""Reading a ``text/event-stream`` answer (the HTML standard's "server-sent events").

Sans-I/O: ``SSEDecoder`` is fed one line at a time (httpx's ``iter_lines`` already
splits on CR, LF and CRLF) and returns a message at each blank line, so the sync
and async clients share it. Only what the standard defines is kept: ``event``,
``data`` (lines joined with LF), ``id`` and ``retry``; comments (``:``) are the
server's keep-alives and are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    data: str
    event: str = "message"
    id: str | None = None
    """The last event id the stream had set when this message ended (it persists)."""
    retry_ms: int | None = None


class SSEDecoder:
    """One decoder per connection; ``last_event_id`` survives for the reconnect."""

    def __init__(self, last_event_id: str | None = None) -> None:
        self.last_event_id = last_event_id
        self.retry_ms: int | None = None
        self._event = ""
        self._data: list[str] = []
        self._seen_data = False

    def feed(self, line: str) -> ServerSentEvent | None:
        """Read one line (without its end); a complete message comes back at a blank line."""
        line = line.rstrip("\r\n")
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._seen_data = True
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self.last_event_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry_ms = int(value)
        # Any other field is ignored, as the standard says.
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        if not self._seen_data:
            self._event = ""
            return None
        message = ServerSentEvent(
            data="\n".join(self._data),
            event=self._event or "message",
            id=self.last_event_id,
            retry_ms=self.retry_ms,
        )
        self._event, self._data, self._seen_data = "", [], False
        return message
