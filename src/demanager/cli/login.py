"""``demanager login``: check a server, project and token, then remember them.

The settings go to the user config file (``DEMANAGER_CONFIG``, default
``~/.config/demanager/config.json``), written owner-only because it holds the
token. Nothing is written unless the server accepted the token: a typo should
fail now, not on the next command.
"""

from __future__ import annotations

from typing import Annotated

import typer

from demanager.cli.session import deps, exit_on_error


def register(parent: typer.Typer) -> None:
    parent.command("login")(login)


def login(
    ctx: typer.Context,
    url: Annotated[
        str,
        typer.Option(
            "--url",
            envvar="DEMANAGER_URL",
            prompt="Server URL",
            help="Server base URL, e.g. http://127.0.0.1:8000.",
        ),
    ],
    project: Annotated[
        str,
        typer.Option(
            "--project",
            envvar="DEMANAGER_PROJECT",
            prompt="Project ID",
            help="Project ID the token is bound to.",
        ),
    ],
    token: Annotated[
        str,
        typer.Option(
            "--token",
            envvar="DEMANAGER_TOKEN",
            prompt="Token",
            hide_input=True,
            help="API token; prompted for (hidden) when not given.",
        ),
    ],
) -> None:
    """Check the connection settings against the server and save them for later commands."""
    from demanager.client import Client, ClientConfig, save_config

    config = ClientConfig(url=url.rstrip("/"), project=project.strip(), token=token.strip())
    with exit_on_error():
        config.check()
        with Client(
            config.url,
            project=config.project,
            token=config.token,
            transport=deps(ctx).transport,
        ) as client:
            visible = client.list(limit=1).total_count
        path = save_config(config)
    typer.echo(
        f"Logged in to {config.url} (project {config.project}, {visible} instance(s) of yours). "
        f"Settings saved to {path}.",
        err=True,
    )
