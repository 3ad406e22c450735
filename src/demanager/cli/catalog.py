"""``demanager profiles list`` and ``demanager flavors list``: what can be created.

Profiles are environment images, flavors are sizes; both come from the
server's catalog (the extension routes ``/demanager/profiles`` and
``/demanager/flavors``).
"""

from __future__ import annotations

import typer

from demanager.cli import output
from demanager.cli.options import OutputOption, ProjectOption, TokenOption, UrlOption
from demanager.cli.output import OutputFormat
from demanager.cli.session import session

profiles_app = typer.Typer(
    name="profiles",
    help="Environment images an instance can run.",
    no_args_is_help=True,
)
flavors_app = typer.Typer(
    name="flavors",
    help="Sizes (CPU, GPU, memory) an instance can have.",
    no_args_is_help=True,
)


def register(parent: typer.Typer) -> None:
    parent.add_typer(profiles_app, name="profiles")
    parent.add_typer(flavors_app, name="flavors")


@profiles_app.command("list")
def list_profiles(
    ctx: typer.Context,
    url: UrlOption = None,
    project: ProjectOption = None,
    token: TokenOption = None,
    fmt: OutputOption = OutputFormat.table,
) -> None:
    """List the profiles (use an ID with `instances create --profile`)."""
    from demanager.client import Profile
    from demanager.schemas.instances import ProfileList

    with session(ctx, url, project, token) as client:
        profiles: list[Profile] = client.profiles()
    if fmt is OutputFormat.json:
        output.emit_json(ProfileList(profiles=profiles))
    else:
        output.show_profiles(profiles)


@flavors_app.command("list")
def list_flavors(
    ctx: typer.Context,
    url: UrlOption = None,
    project: ProjectOption = None,
    token: TokenOption = None,
    fmt: OutputOption = OutputFormat.table,
) -> None:
    """List the flavors (use a name with `instances create --flavor`)."""
    from demanager.client import FlavorDetails
    from demanager.schemas.instances import FlavorList

    with session(ctx, url, project, token) as client:
        flavors: list[FlavorDetails] = client.flavors()
    if fmt is OutputFormat.json:
        output.emit_json(FlavorList(flavors=flavors))
    else:
        output.show_flavors(flavors)
