"""The live line shown on stderr while a command waits for an instance.

It shows the instance, its status, its rank when it is queued for a free
flavor, the phase its events tell ("launching", "waiting for JupyterLab",
"ready in 1.8 s") and the time spent so far; above it, each event of the
instance is printed as it happens. It is only drawn when a person watches
(stdout and stderr are terminals); scripts and pipes get silence, and the
wait then polls the status alone, as it always did.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from demanager.cli.output import (
    format_duration,
    is_interactive,
    plain,
    printable,
    stderr_console,
    styled_status,
)

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

    from demanager.client import Client, Event, Instance

ProgressUpdate = Callable[["Instance"], None]
EventUpdate = Callable[["Event"], None]

#: The phase an event of each kind starts. Kinds not listed (and kinds newer than
#: this client) leave the phase as it was; their line is still printed.
_PHASES = {
    "created": "launching",
    "admitted": "launching",
    "start_requested": "launching",
    "restart_requested": "restarting",
    "launched": "waiting for JupyterLab",
    "adopted": "waiting for JupyterLab",
    "health_lost": "not answering",
    "health_regained": "answering again",
    "stop_requested": "stopping",
    "stopped": "stopped",
    "failed": "failed",
    "deleted": "deleted",
}


def event_mark(client: Client, instance_id: str) -> int | None:
    """The newest event's id before an action, so that a watched wait shows all the
    action's events; None when nobody watches or the server keeps no event log."""
    from demanager.client import DemanagerClientError

    if not is_interactive():
        return None
    try:
        return client.latest_event_id(instance_id)
    except DemanagerClientError:
        return None


def phase_of(event: Event, current: str | None = None) -> str | None:
    """The phase the live line shows after ``event``."""
    if event.kind == "ready":
        start_ms = event.detail.get("start_ms")
        if isinstance(start_ms, int):
            return f"ready in {start_ms / 1000:.1f} s"
        return "ready"
    if event.kind == "queued":
        rank = event.detail.get("rank")
        return f"queued #{rank}" if isinstance(rank, int) else "queued"
    return _PHASES.get(event.kind, current)


def event_line(event: Event, since_ms: int) -> str:
    """``+1.8s  Ready: …`` for the log above the live line (Rich markup, message escaped)."""
    offset = max(0, event.at - since_ms) / 1000
    return f"[dim]{f'+{offset:.1f}s':>8}[/]  {plain(printable(event.message or event.kind))}"


class WaitView:
    """Rendered by Rich several times a second, so elapsed time moves between polls."""

    def __init__(self, label: str, goal: str, console: Console | None = None) -> None:
        from rich.spinner import Spinner

        self._label = label
        self._goal = goal
        self._status = "..."
        self._rank: int | None = None
        self._phase: str | None = None
        self._first_at: int | None = None
        self._started = time.monotonic()
        self._spinner = Spinner("dots")
        self._console = console

    @property
    def phase(self) -> str | None:
        return self._phase

    def update(self, instance: Instance) -> None:
        self._status = instance.status
        self._rank = instance.queuing_info.rank if instance.queuing_info is not None else None

    def event(self, event: Event) -> None:
        """Print the event's line above the live line and move to its phase."""
        if self._first_at is None:
            self._first_at = event.at
        self._phase = phase_of(event, self._phase)
        if self._console is not None:
            self._console.print(event_line(event, self._first_at), highlight=False)

    def __rich__(self) -> RenderableType:
        from rich.table import Table

        elapsed = format_duration(int(time.monotonic() - self._started))
        queue = f"  queue #{self._rank}" if self._rank is not None else ""
        phase = f"  {plain(self._phase)}" if self._phase else ""
        grid = Table.grid(padding=(0, 1))
        grid.add_row(
            self._spinner,
            f"{self._label}  {styled_status(self._status)}{queue}{phase}  "
            f"[dim]waiting for {self._goal}, {elapsed}[/]",
        )
        return grid


@dataclass(frozen=True)
class WaitHooks:
    """What to hand to ``wait_until``: ``on_event`` is None when nobody watches, so
    scripts do not open an event stream and keep today's polling."""

    on_progress: ProgressUpdate
    on_event: EventUpdate | None


@contextmanager
def waiting(label: str, goal: str) -> Iterator[WaitHooks]:
    """Yields the callbacks to hand to ``wait_until``."""
    if not is_interactive():
        yield WaitHooks(lambda _instance: None, None)
        return
    from rich.live import Live

    console = stderr_console()
    view = WaitView(label, goal, console)
    with Live(view, console=console, refresh_per_second=8, transient=True):
        yield WaitHooks(view.update, view.event)
