"""Wire models of the event log (an extension, docs/events.md).

``kind`` is a plain string, not an enum: servers add kinds over time, and a
client reading an older vocabulary must still show a newer event (by its
``message``) rather than refuse it.
"""

from __future__ import annotations

from pydantic import Field

from demanager.schemas.instances import Wire


class Event(Wire):
    id: int
    instance_id: str
    project_id: str | None = None
    at: int = Field(description="ms since the epoch")
    kind: str
    actor: str = ""
    message: str = ""
    code: str | None = None
    detail: dict[str, str | int] = Field(default_factory=dict)


class EventPage(Wire):
    total: int
    events: list[Event]
