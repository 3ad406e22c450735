"""``demanager instances ...``: create, inspect, drive and delete development environments.

Each command is a thin shell over one or two SDK calls: options are turned
into arguments, the answer is printed by ``output``, and ``session`` turns
failures into exit codes. Instances can be named by ID or by name.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer

from demanager.cli import output
from demanager.cli.options import (
    InstanceArgument,
    OutputOption,
    ProjectOption,
    TimeoutOption,
    TokenOption,
    UrlOption,
    WaitOption,
    complete_status,
)
from demanager.cli.output import OutputFormat
from demanager.cli.progress import event_mark, waiting
from demanager.cli.session import ExitCode, deps, fail, resolve, session

if TYPE_CHECKING:
    from demanager.client import ActionResponse, Client, Instance

app = typer.Typer(
    name="instances",
    help="Create, list, start, stop and delete development environments.",
    no_args_is_help=True,
)


def register(parent: typer.Typer) -> None:
    parent.add_typer(app, name="instances")


class StorageType(StrEnum):
    evs = "evs"
    obs = "obs"
    obsfs = "obsfs"


class SortField(StrEnum):
    name = "name"
    creation_timestamp = "creation_timestamp"


DEFAULT_WAIT = 600.0


def _wait(
    ctx: typer.Context,
    client: Client,
    instance: Instance,
    goal: Iterable[str],
    timeout: float,
    *,
    events_after: int | None = None,
) -> Instance:
    """Wait for ``goal``; a person watching also sees the instance's events from
    ``events_after`` on (default: from now)."""
    targets = sorted(goal)
    pace = deps(ctx)
    with waiting(instance.name, " or ".join(targets)) as hooks:
        return client.wait_until(
            instance.id,
            targets,
            timeout=timeout,
            on_progress=hooks.on_progress,
            interval=pace.poll_interval,
            max_interval=max(pace.max_poll_interval, pace.poll_interval),
            on_event=hooks.on_event,
            events_after=events_after,
        )


def _show(instance: Instance, fmt: OutputFormat) -> None:
    if fmt is OutputFormat.json:
        output.emit_json(instance)
    else:
        output.show_instance(instance)


def _annotations(pairs: list[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--annotation")
        labels[key] = value
    return labels


@app.command()
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="1-64 of A-Z a-z 0-9 - _.", show_default=False)],
    profile: Annotated[
        str,
        typer.Option(
            "--profile",
            "-p",
            help="Profile ID (see `demanager profiles list`).",
            metavar="ID",
            show_default=False,
        ),
    ],
    flavor: Annotated[
        str,
        typer.Option(
            "--flavor",
            "-f",
            help="Flavor name (see `demanager flavors list`).",
            metavar="NAME",
            show_default=False,
        ),
    ],
    storage: Annotated[
        StorageType,
        typer.Option(help="evs: a private volume; obs/obsfs: object storage."),
    ] = StorageType.evs,
    volume_size: Annotated[
        int | None,
        typer.Option(
            help="EVS volume size in GB (5-4096; server default 5).",
            metavar="GB",
            show_default=False,
        ),
    ] = None,
    path: Annotated[
        str | None,
        typer.Option(
            help="obs: /bucket/dir/; obsfs: file-system name.",
            metavar="PATH",
            show_default=False,
        ),
    ] = None,
    pool: Annotated[
        str | None,
        typer.Option(
            help="Dedicated pool ID (needed for obsfs).", metavar="ID", show_default=False
        ),
    ] = None,
    auto_stop: Annotated[
        int | None,
        typer.Option(
            help="Stop automatically after SECONDS of running (3600-86400).",
            metavar="SECONDS",
            show_default=False,
        ),
    ] = None,
    description: Annotated[
        str | None,
        typer.Option(help="Free text, at most 512 characters.", metavar="TEXT", show_default=False),
    ] = None,
    annotation: Annotated[
        list[str] | None,
        typer.Option(help="A label; repeat for more.", metavar="KEY=VALUE", show_default=False),
    ] = None,
    wait: WaitOption = False,
    timeout: TimeoutOption = DEFAULT_WAIT,
    url: UrlOption = None,
    project: ProjectOption = None,
    token: TokenOption = None,
    fmt: OutputOption = OutputFormat.table,
) -> None:
    """Create an instance; it starts by itself. With --wait, return once it is RUNNING."""
    from demanager.client import Location, Storage

    labels = _annotations(annotation or [])
    if storage is StorageType.evs and path is not None:
        raise typer.BadParameter("only obs and obsfs storage take a path", param_hint="--path")
    if storage is not StorageType.evs and volume_size is not None:
        raise typer.BadParameter("only evs storage has a size", param_hint="--volume-size")
    location = (
        Location(volume_size=volume_size)
        if storage is StorageType.evs
        else Location(path=path)
        if path is not None
        else None
    )
    with session(ctx, url, project, token) as client:
        instance = client.create(
            name,
            profile_id=profile,
            flavor=flavor,
            storage=Storage(type=storage.value, location=location),
            description=description,
            auto_stop=auto_stop,
            annotations=labels or None,
            pool_id=pool,
        )
        if fmt is OutputFormat.table:
            output.note(f"created {instance.name} ({instance.id}), {instance.status}")
        if wait:
            # A new instance's log starts with its creation: show all of it.
            instance = _wait(ctx, client, instance, {"RUNNING"}, timeout, events_after=0)
    _show(instance, fmt)


@app.command("list")
def list_instances(
    ctx: typer.Context,
    status: Annotated[
        str | None,
        typer.Option(
            help="Only instances in this status (e.g. RUNNING, DELETED).",
            metavar="STATUS",
            autocompletion=complete_status,
            show_default=False,
        ),
    ] = None,
    all_users: Annotated[
        bool,
        typer.Option("--all-users", "-a", help="Everyone's instances, not only mine."),
    ] = False,
    sort: Annotated[SortField, typer.Option(help="Sort key.")] = SortField.name,
    desc: Annotated[bool, typer.Option("--desc", help="Descending order.")] = False,
    limit: Annotated[int, typer.Option(min=0, help="At most this many; 0 = all.")] = 0,
    offset: Annotated[int, typer.Option(min=0, help="Skip this many first.")] = 0,
    url: UrlOption = None,
    project: ProjectOption = None,
    token: TokenOption = None,
    fmt: OutputOption = OutputFormat.table,
) -> None:
    """List instances of the project (yours only, unless --all-users)."""
    with session(ctx, url, project, token) as client:
        page = client.list(
            status=status,
            show_self=not all_users,
            sortby=sort.value,
            order="desc" if desc else "asc",
            limit=limit,
            offset=offset,
        )
    if fmt is OutputFormat.json:
        output.emit_json(page)
    else:
        output.show_instances(page, offset=offset)


@app.command()
def get(
    ctx: typer.Context,
    instance: InstanceArgument,
    url: UrlOption = None,
    project: ProjectOption = None,
    token: TokenOption = None,
    fmt: OutputOption = OutputFormat.table,
) -> None:
    """Show one instance."""
    with session(ctx, url, project, token) as client:
        found = resolve(client, instance)
    _show(found, fmt)


@app.command()
def update(
    ctx: typer.Context,
    instance: InstanceArgument,
    description: Annotated[
        str | None,
        typer.Option(help='New description ("" clears it).', metavar="TEXT", show_default=False),
    ] = None,
    auto_stop: Annotated[
        int | None,
        typer.Option(
            help="Turn auto-stop on: stop after SECONDS of running (from the next start).",
            metavar="SECONDS",
            show_default=False,
        ),
    ] = None,
    no_auto_stop: Annotated[
        bool, typer.Option("--no-auto-stop", help="Turn auto-stop off, now.")
    ] = False,
    url: UrlOption = None,
    project: ProjectOption = None,
    token: TokenOption = None,
    fmt: OutputOption = OutputFormat.table,
) -> None:
    """Change the description or the auto-stop setting."""
    from demanager.client import AutoStopRequest

    if auto_stop is not None and no_auto_stop:
        raise typer.BadParameter("give --auto-stop or --no-auto-stop, not both")
    if description is None and auto_stop is None and not no_auto_stop:
        raise typer.BadParameter(
            "nothing to change: give --description, --auto-stop or --no-auto-stop"
        )
    change: int | AutoStopRequest | None = (
        AutoStopRequest(enable=False) if no_auto_stop else auto_stop
    )
    with session(ctx, url, project, token) as client:
        target = resolve(client, instance)
        updated = client.update(target.id, description=description, auto_stop=change)
    _show(updated, fmt)


def _act(
    ctx: typer.Context,
    ref: str,
    perform: Callable[[Client, str], ActionResponse],
    goal: str,
    *,
    wait: bool,
    timeout: float,
    connection: tuple[str | None, str | None, str | None],
    fmt: OutputFormat,
) -> None:
    with session(ctx, *connection) as client:
        instance = resolve(client, ref)
        mark = event_mark(client, instance.id) if wait else None
        answer = perform(client, instance.id)
        if fmt is OutputFormat.table:
            output.show_action(instance.name, answer)
        if wait:
            final = _wait(ctx, client, instance, {goal}, timeout, events_after=mark)
            if fmt is OutputFormat.table:
                output.note(f"{final.name} is {final.status}")
    if fmt is OutputFormat.json:
        # The action's own answer, whether or not we waited, so the JSON shape
        # of a command never depends on its flags.
        output.emit_json(answer)


@app.command()
def start(
    ctx: typer.Context,
    instance: InstanceArgument,
    wait: WaitOption = False,
    timeout: TimeoutOption = DEFAULT_WAIT,
    url: UrlOption = None,
    project: ProjectOption = None,
    token: TokenOption = None,
    fmt: OutputOption = OutputFormat.table,
) -> None:
    """Start a stopped instance (--wait: until RUNNING)."""
    from demanager.client import Client

    _act(
        ctx,
        instance,
        Client.start,
        "RUNNING",
        wait=wait,
        timeout=timeout,
        connection=(url, project, token),
        fmt=fmt,
    )


@app.command()
def stop(
    ctx: typer.Context,
    instance: InstanceArgument,
    wait: WaitOption = False,
    timeout: TimeoutOption = DEFAULT_WAIT,
    url: UrlOption = None,
    project: ProjectOption = None,
    token: TokenOption = None,
    fmt: OutputOption = OutputFormat.table,
) -> None:
    """Stop a running instance; its storage is kept (--wait: until STOPPED)."""
    from demanager.client import Client

    _act(
        ctx,
        instance,
        Client.stop,
        "STOPPED",
        wait=wait,
        timeout=timeout,
        connection=(url, project, token),
        fmt=fmt,
    )


@app.command()
def restart(
    ctx: typer.Context,
    instance: InstanceArgument,
    wait: WaitOption = False,
    timeout: TimeoutOption = DEFAULT_WAIT,
    url: UrlOption = None,
    project: ProjectOption = None,
    token: TokenOption = None,
    fmt: OutputOption = OutputFormat.table,
) -> None:
    """Restart a running instance; auto-stop counts again from now (--wait: until RUNNING)."""
    from demanager.client import Client

    _act(
        ctx,
        instance,
        Client.restart,
        "RUNNING",
        wait=wait,
        timeout=timeout,
        connection=(url, project, token),
        fmt=fmt,
    )


@app.command()
def delete(
    ctx: typer.Context,
    instance: InstanceArgument,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    wait: WaitOption = False,
    timeout: TimeoutOption = DEFAULT_WAIT,
    url: UrlOption = None,
    project: ProjectOption = None,
    token: TokenOption = None,
    fmt: OutputOption = OutputFormat.table,
) -> None:
    """Delete a stopped instance and its EVS volume (the data cannot be recovered)."""
    with session(ctx, url, project, token) as client:
        target = resolve(client, instance)
        if not yes:
            if not sys.stdin.isatty():
                fail(
                    ExitCode.USAGE,
                    "not a terminal: pass --yes to delete without confirmation",
                )
            typer.confirm(
                f"Delete {target.name} ({target.id}) and all data on its volume?",
                abort=True,
            )
        answer = client.delete(target.id)
        if wait:
            pace = deps(ctx)
            client.wait_until_deleted(target.id, timeout=timeout, interval=pace.poll_interval)
    if fmt is OutputFormat.json:
        output.emit_json(answer)
    else:
        output.show_deleted(target.name, answer)


@app.command("open")
def open_instance(
    ctx: typer.Context,
    instance: InstanceArgument,
    print_only: Annotated[
        bool,
        typer.Option("--print", help="Only print the URL, do not start a browser."),
    ] = False,
    url: UrlOption = None,
    project: ProjectOption = None,
    token: TokenOption = None,
) -> None:
    """Open a running instance's JupyterLab through a short-lived signed link.

    No sign-in is needed; anyone holding the link can use it until it expires,
    so the --print output is a credential.
    """
    with session(ctx, url, project, token) as client:
        target = resolve(client, instance)
        if target.status != "RUNNING":
            fail(
                ExitCode.API_ERROR,
                f"{target.name} is {target.status}; it can be opened only while RUNNING",
            )
        address = client.signed_url(target.id).url
    typer.echo(address)
    if not print_only:
        deps(ctx).open_browser(address)


@app.command()
def stops(
    ctx: typer.Context,
    instance: InstanceArgument,
    url: UrlOption = None,
    project: ProjectOption = None,
    token: TokenOption = None,
    fmt: OutputOption = OutputFormat.table,
) -> None:
    """Show when the instance's current run will stop, and why."""
    with session(ctx, url, project, token) as client:
        target = resolve(client, instance)
        answer = client.stops(target.id)
    if fmt is OutputFormat.json:
        output.emit_json(answer)
    else:
        output.show_stops(target.name, answer)


@app.command()
def extend(
    ctx: typer.Context,
    instance: InstanceArgument,
    seconds: Annotated[
        int, typer.Argument(min=1, help="How much later every stop of the current run comes.")
    ],
    url: UrlOption = None,
    project: ProjectOption = None,
    token: TokenOption = None,
    fmt: OutputOption = OutputFormat.table,
) -> None:
    """Postpone the current run's stops (auto-stop, idle, lifetime), within the
    operator's limit per run."""
    with session(ctx, url, project, token) as client:
        target = resolve(client, instance)
        answer = client.extend(target.id, seconds)
    if fmt is OutputFormat.json:
        output.emit_json(answer)
    else:
        output.show_stops(target.name, answer)


@app.command("wait")
def wait_for(
    ctx: typer.Context,
    instance: InstanceArgument,
    status: Annotated[
        list[str] | None,
        typer.Option(
            "--status",
            "-s",
            help="Target status; repeat to accept several. [default: RUNNING]",
            metavar="STATUS",
            autocompletion=complete_status,
            show_default=False,
        ),
    ] = None,
    timeout: TimeoutOption = DEFAULT_WAIT,
    url: UrlOption = None,
    project: ProjectOption = None,
    token: TokenOption = None,
    fmt: OutputOption = OutputFormat.table,
) -> None:
    """Wait until an instance reaches a status (exit 3 on timeout, 4 if it fails)."""
    from demanager.client import STATUSES

    goal = {value.upper() for value in status or ["RUNNING"]}
    unknown = sorted(goal - STATUSES)
    if unknown:
        raise typer.BadParameter(f"unknown status {', '.join(unknown)}", param_hint="--status")
    with session(ctx, url, project, token) as client:
        target = resolve(client, instance)
        final = _wait(ctx, client, target, goal, timeout)
    _show(final, fmt)
