"""The live line shown on stderr while a command waits for an instance.

It shows the instance, its status, its rank when it is queued for a free
flavor, and the time spent so far. It is only drawn when a person watches
(stdout and stderr are terminals); scripts and pipes get silence.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from demanager.cli.output import (
    format_duration,
    is_interactive,
    stderr_console,
    styled_status,
)

if TYPE_CHECKING:
    from rich.console import RenderableType

    from demanager.client import Instance

ProgressUpdate = Callable[["Instance"], None]


class WaitView:
    """Rendered by Rich several times a second, so elapsed time moves between polls."""

    def __init__(self, label: str, goal: str) -> None:
        from rich.spinner import Spinner

        self._label = label
        self._goal = goal
        self._status = "..."
        self._rank: int | None = None
        self._started = time.monotonic()
        self._spinner = Spinner("dots")

    def update(self, instance: Instance) -> None:
        self._status = instance.status
        self._rank = instance.queuing_info.rank if instance.queuing_info is not None else None

    def __rich__(self) -> RenderableType:
        from rich.table import Table

        elapsed = format_duration(int(time.monotonic() - self._started))
        queue = f"  queue #{self._rank}" if self._rank is not None else ""
        grid = Table.grid(padding=(0, 1))
        grid.add_row(
            self._spinner,
            f"{self._label}  {styled_status(self._status)}{queue}  "
            f"[dim]waiting for {self._goal}, {elapsed}[/]",
        )
        return grid


@contextmanager
def waiting(label: str, goal: str) -> Iterator[ProgressUpdate]:
    """Yields the ``on_progress`` callback to hand to ``wait_until``."""
    if not is_interactive():
        yield lambda _instance: None
        return
    from rich.live import Live

    view = WaitView(label, goal)
    with Live(view, console=stderr_console(), refresh_per_second=8, transient=True):
        yield view.update
