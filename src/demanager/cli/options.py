"""Options shared by every user command, declared once as ``Annotated`` aliases.

Connection options are accepted on each command (not only on the group) so
that they can follow the sub-command as people type them:
``demanager instances list --url http://host:8000``. Values left out fall
back to ``DEMANAGER_URL``/``DEMANAGER_PROJECT``/``DEMANAGER_TOKEN`` and then to
the file written by ``demanager login``.
"""

from __future__ import annotations

from typing import Annotated

import typer

from demanager.cli.output import OutputFormat

CONNECTION = "Connection"


def complete_status(incomplete: str) -> list[str]:
    from demanager.client import STATUSES

    return sorted(status for status in STATUSES if status.startswith(incomplete.upper()))


UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar="DEMANAGER_URL",
        help="Server base URL, e.g. http://127.0.0.1:8000.",
        rich_help_panel=CONNECTION,
        show_default=False,
    ),
]
ProjectOption = Annotated[
    str | None,
    typer.Option(
        "--project",
        envvar="DEMANAGER_PROJECT",
        help="Project ID the token is bound to.",
        rich_help_panel=CONNECTION,
        show_default=False,
    ),
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="DEMANAGER_TOKEN",
        help="API token (X-Auth-Token).",
        rich_help_panel=CONNECTION,
        show_default=False,
    ),
]
OutputOption = Annotated[
    OutputFormat,
    typer.Option(
        "--output",
        "-o",
        envvar="DEMANAGER_OUTPUT",
        case_sensitive=False,
        help="table for people, json for scripts (the API's JSON, unchanged).",
    ),
]
WaitOption = Annotated[
    bool,
    typer.Option("--wait", "-w", help="Block until the instance reaches its next status."),
]
TimeoutOption = Annotated[
    float,
    typer.Option("--timeout", min=0, help="Seconds to wait before giving up (exit 3)."),
]
InstanceArgument = Annotated[
    str, typer.Argument(help="Instance ID (DE-...) or name.", show_default=False)
]
