"""How the user commands print what the server answered.

Two audiences: people get Rich tables on stdout; scripts ask for
``--output json`` and get exactly the wire JSON of the answer (the pydantic
models keep every key the server sent, unknown ones included, and only those).
Diagnostics and progress go to stderr so that stdout stays parseable.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Sequence
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from pydantic import BaseModel
    from rich.console import Console, RenderableType
    from rich.table import Table

    from demanager.client import (
        ActionResponse,
        DeleteResponse,
        FlavorDetails,
        Instance,
        InstanceList,
        Profile,
        RunStops,
    )

#: Rows of a table are at most this wide when stdout is a file or a pipe,
#: where Rich would otherwise assume 80 columns and fold IDs across lines.
PIPE_WIDTH = 240

_STATUS_STYLES = {
    "RUNNING": "bold green",
    "STOPPED": "dim",
    "CREATE_FAILED": "bold red",
    "START_FAILED": "bold red",
    "RESIZE_FAILED": "bold red",
    "UNAVAILABLE": "red",
}


class OutputFormat(StrEnum):
    table = "table"
    json = "json"


def stdout_console() -> Console:
    from rich.console import Console

    console = Console(highlight=False)
    if not console.is_terminal:
        console.width = max(console.width, PIPE_WIDTH)
    return console


def show(renderable: RenderableType) -> None:
    """Print to stdout; in a pipe, without the padding Rich adds to the last column."""
    console = stdout_console()
    if console.is_terminal:
        console.print(renderable)
        return
    with console.capture() as captured:
        console.print(renderable)
    for line in captured.get().splitlines():
        typer.echo(line.rstrip())


def stderr_console() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def emit_json(model: BaseModel) -> None:
    # exclude_unset: a key the server left out stays out; a null it sent stays null.
    typer.echo(model.model_dump_json(exclude_unset=True, indent=2))


def note(message: str) -> None:
    """A line for people, on stderr, so it never mixes with machine output."""
    typer.echo(message, err=True)


def plain(text: str) -> str:
    """User-supplied text, shown as typed even if it looks like Rich markup."""
    from rich.markup import escape

    return escape(text)


def printable(text: str) -> str:
    """Server text shown on a terminal, with control characters (escape sequences
    that could move the cursor or retitle the window) replaced by U+FFFD."""
    return "".join(char if char.isprintable() else "\ufffd" for char in text)


def styled_status(status: str) -> str:
    style = _STATUS_STYLES.get(status, "yellow")
    return f"[{style}]{status}[/]"


def format_timestamp(value: str | int | None) -> str:
    """Contract timestamps are ms since the epoch (strings or integers); show local time."""
    if value is None or value == "":
        return "-"
    try:
        millis = int(value)
    except ValueError:
        return str(value)
    return datetime.fromtimestamp(millis / 1000).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def format_duration(seconds: int) -> str:
    hours, rest = divmod(max(seconds, 0), 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def format_auto_stop(instance: Instance) -> str:
    auto_stop = instance.spec.auto_stop
    if not auto_stop.enable:
        return "off"
    if auto_stop.remain_time is not None:
        return f"{format_duration(auto_stop.remain_time)} left"
    if auto_stop.duration is not None:
        return f"after {format_duration(auto_stop.duration)}"
    return "on"


def format_storage(instance: Instance) -> str:
    storage = instance.spec.storage
    location = storage.location
    if location is None:
        return storage.type
    if storage.type == "evs" and location.volume_size is not None:
        return f"evs {location.volume_size} {location.volume_unit or 'GB'}"
    return f"{storage.type} {location.path or ''}".strip()


def _table(*columns: str) -> Table:
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in columns:
        table.add_column(column, no_wrap=column in {"ID", "NAME", "STATUS"})
    return table


def show_instances(page: InstanceList, *, offset: int = 0) -> None:
    table = _table("NAME", "ID", "STATUS", "PROFILE", "FLAVOR", "CREATED", "AUTO-STOP")
    for instance in page.instances:
        table.add_row(
            instance.name,
            instance.id,
            styled_status(instance.status),
            instance.profile.id,
            instance.flavor,
            format_timestamp(instance.creation_timestamp),
            format_auto_stop(instance),
        )
    if page.instances:
        show(table)
    shown = len(page.instances)
    if shown < page.total_count:
        note(f"{shown} shown ({offset + 1}-{offset + shown}) of {page.total_count} instances")
    elif not shown:
        note("no instances")


def show_instance(instance: Instance) -> None:
    from rich.table import Table

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    url = instance.spec.annotations.get("url", "")
    rows: list[tuple[str, str]] = [
        ("Name", instance.name),
        ("ID", instance.id),
        ("Status", styled_status(instance.status)),
        ("Description", plain(instance.description) or "-"),
        ("Profile", instance.profile.id),
        ("Flavor", f"{instance.flavor} ({instance.flavor_details.type})"),
        ("Storage", format_storage(instance)),
        ("Auto-stop", format_auto_stop(instance)),
        ("URL", url or "-"),
        ("Owner", plain(instance.user.name)),
        ("Created", format_timestamp(instance.creation_timestamp)),
        ("Updated", format_timestamp(instance.latest_update_timestamp)),
    ]
    if instance.queuing_info is not None:
        rows.append(("Queue", f"#{instance.queuing_info.rank} for {instance.flavor}"))
    reasons = instance.spec.failed_reasons
    if reasons is not None:
        rows.append(("Failure", plain(f"{reasons.code}: {reasons.message}")))
    user_labels = {
        key: value
        for key, value in instance.spec.annotations.items()
        if key not in {"url", "target_domain"}
    }
    if user_labels:
        rows.append(("Annotations", ", ".join(f"{k}={v}" for k, v in user_labels.items())))
    for label, value in rows:
        grid.add_row(label, value)
    show(grid)


def show_stops(name: str, stops: RunStops) -> None:
    """When and why the instance's current run stops, earliest first."""
    now = time.time()
    if not stops.stops:
        idle = stops.idle_timeout_seconds
        if stops.status != "RUNNING":
            note(f"{name} is {stops.status}; only a running instance has stops")
        elif idle is not None:
            note(f"{name} stops after {format_duration(idle)} unused, and nothing else stops it")
        else:
            note(f"nothing will stop {name}")
    else:
        table = _table("WHEN", "IN", "REASON", "WHY")
        for stop in stops.stops:
            table.add_row(
                format_timestamp(stop.at),
                format_duration(int(stop.at / 1000 - now)),
                stop.reason,
                stop.why,
            )
        show(table)
        if stops.idle_timeout_seconds is not None:
            note(f"or after {format_duration(stops.idle_timeout_seconds)} unused")
    if stops.status == "RUNNING":
        note(
            f"extended by {format_duration(stops.extended_seconds)} in this run; "
            f"{format_duration(stops.extension_left_seconds)} more allowed"
        )


def show_action(name: str, answer: ActionResponse) -> None:
    show(
        f"{name}: {styled_status(answer.previous_state)} -> {styled_status(answer.current_status)}"
    )


def show_deleted(name: str, answer: DeleteResponse) -> None:
    show(f"deleted {name} ({answer.instance_id})")


def show_profiles(profiles: Sequence[Profile]) -> None:
    table = _table("ID", "TYPE", "IMAGE", "DESCRIPTION")
    for profile in profiles:
        params = profile.provision.spec.params
        table.add_row(
            profile.id,
            profile.flavor_type,
            f"{params.namespace}/{params.image_name}:{params.image_tag}",
            plain(profile.description),
        )
    show(table)


def _sizing(params: dict[str, object]) -> str:
    parts: Iterable[str] = (
        f"{key} {value}" for key, value in params.items() if value not in (None, "", 0)
    )
    return ", ".join(parts) or "-"


def show_flavors(flavors: Sequence[FlavorDetails]) -> None:
    table = _table("NAME", "TYPE", "STATUS", "SIZE", "STORAGE", "PROMO")
    for flavor in flavors:
        table.add_row(
            flavor.name,
            flavor.type,
            "[green]onSale[/]" if flavor.status == "onSale" else f"[red]{flavor.status}[/]",
            _sizing(flavor.params),
            ", ".join(flavor.storage_list or []) or "-",
            flavor.promo_type or "-",
        )
    show(table)


def is_interactive() -> bool:
    """Live displays and prompts only make sense when a person watches stdout."""
    return sys.stdout.isatty() and sys.stderr.isatty()
