"""The bridge from a user command to the SDK: connect, resolve names, turn errors into exit codes.

Every user command runs its body inside ``session(...)``, which builds a
``Client`` from the command's ``--url/--project/--token`` (else environment,
else the ``demanager login`` file) and translates the SDK's exceptions into
one ``error: ...`` line on stderr and the documented exit code. The SDK is
imported lazily so ``demanager --help`` and shell completion stay fast.

Tests inject a transport (and short poll intervals) through Typer's context
object: ``CliRunner().invoke(app, args, obj=CliDeps(transport=...))``.
"""

from __future__ import annotations

import re
import webbrowser
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, NoReturn

import typer

if TYPE_CHECKING:
    import httpx

    from demanager.client import Client, Instance


class ExitCode(IntEnum):
    OK = 0
    API_ERROR = 1
    USAGE = 2  # raised by Typer/Click itself
    WAIT_TIMEOUT = 3
    INSTANCE_FAILED = 4
    UNREACHABLE = 5  # cannot connect, or not logged in


@dataclass
class CliDeps:
    """What tests replace: the HTTP transport, the poll pace, the browser."""

    transport: httpx.BaseTransport | None = None
    poll_interval: float = 0.5
    # People watch a CLI wait: poll at least every 2 s so it ends soon after the status changes.
    max_poll_interval: float = 2.0
    open_browser: Callable[[str], object] = field(default=webbrowser.open)


def deps(ctx: typer.Context) -> CliDeps:
    found = ctx.find_object(CliDeps)
    return found if found is not None else CliDeps()


def fail(code: ExitCode, message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(int(code))


@contextmanager
def exit_on_error() -> Iterator[None]:
    """Map SDK exceptions to the CLI's exit codes (documented in docs/reference/cli.md)."""
    from demanager.client import (
        ConfigurationError,
        DemanagerAPIError,
        DemanagerClientError,
        InstanceFailed,
        TransportError,
        WaitTimeout,
    )

    try:
        yield
    except (ConfigurationError, TransportError) as exc:
        fail(ExitCode.UNREACHABLE, str(exc))
    except WaitTimeout as exc:
        fail(ExitCode.WAIT_TIMEOUT, str(exc))
    except InstanceFailed as exc:
        fail(ExitCode.INSTANCE_FAILED, str(exc))
    except DemanagerAPIError as exc:
        fail(ExitCode.API_ERROR, f"{exc.code}: {exc.message}" if exc.code else str(exc))
    except DemanagerClientError as exc:
        fail(ExitCode.API_ERROR, str(exc))


@contextmanager
def session(
    ctx: typer.Context, url: str | None, project: str | None, token: str | None
) -> Iterator[Client]:
    """A connected client for one command; errors inside become exit codes."""
    from demanager.client import Client

    with (
        exit_on_error(),
        Client(url, project=project, token=token, transport=deps(ctx).transport) as client,
    ):
        yield client


_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def resolve(client: Client, ref: str) -> Instance:
    """The instance ``ref`` names: an ID first, else a name of any owner in the project.

    IDs are tried first because an ID (``DE-…``) is also a valid name; a name
    costs one extra listing.
    """
    from demanager.client import InstanceNotFound

    try:
        return client.get(ref)
    except InstanceNotFound as missing:
        if not _NAME.match(ref):
            raise
        found = client.find(ref)
        if found is None:
            raise missing from None
        return found
