"""``demanager instances events ID [--follow]``: an instance's event log, and the
events as they happen.

People get one line per event (local time, kind, actor, message); scripts ask for
``--output json`` and get the page as the API answers it, or with ``--follow`` one
event per line (JSON Lines), so ``jq`` can read the stream while it runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from demanager.cli import output
from demanager.cli.options import (
    InstanceArgument,
    OutputOption,
    ProjectOption,
    TokenOption,
    UrlOption,
)
from demanager.cli.output import OutputFormat
from demanager.cli.session import resolve, session

if TYPE_CHECKING:
    from demanager.client import Event


def register(parent: typer.Typer) -> None:
    parent.command("events")(events)


def event_text(event: Event) -> str:
    """One line for people; the message is printed as plain text, never as markup."""
    when = output.format_timestamp(event.at)
    line = f"{when}  {event.kind:<17} {event.actor:<16} {event.message}".rstrip()
    return output.printable(line)


def _emit(event: Event, fmt: OutputFormat) -> None:
    if fmt is OutputFormat.json:
        typer.echo(event.model_dump_json(exclude_unset=True))
    else:
        typer.echo(event_text(event))


def events(
    ctx: typer.Context,
    instance: InstanceArgument,
    follow: Annotated[
        bool,
        typer.Option("--follow", "-F", help="Keep printing events as they happen (Ctrl-C ends)."),
    ] = False,
    after: Annotated[
        int,
        typer.Option(min=0, help="Only events with a greater id.", show_default=False),
    ] = 0,
    limit: Annotated[
        int, typer.Option(min=1, max=1000, help="At most this many past events.")
    ] = 100,
    url: UrlOption = None,
    project: ProjectOption = None,
    token: TokenOption = None,
    fmt: OutputOption = OutputFormat.table,
) -> None:
    """Show an instance's events, oldest first (--follow: then the new ones, live)."""
    with session(ctx, url, project, token) as client:
        target = resolve(client, instance)
        page = client.events(target.id, after=after or None, limit=limit)
        if not follow:
            if fmt is OutputFormat.json:
                output.emit_json(page)
                return
            for event in page.events:
                _emit(event, fmt)
            if len(page.events) < page.total:
                output.note(f"{len(page.events)} of {page.total} events shown; see --after")
            elif not page.events:
                output.note("no events")
            return
        for event in page.events:
            _emit(event, fmt)
        # The stream goes on after the last event shown, so it also brings whatever
        # the page left out.
        last = page.events[-1].id if page.events else after
        try:
            for event in client.follow_events(target.id, after=last):
                _emit(event, fmt)
        except KeyboardInterrupt:
            return
