"""Entry point of the ``demanager`` command.

Sub-commands live in their own modules and are imported lazily by Typer's
registration below, so ``demanager --help`` stays fast.
"""

from __future__ import annotations

import typer

from demanager.cli import (
    backup,
    catalog,
    doctor,
    events,
    instances,
    login,
    pools,
    projects,
    server,
    storage,
)

app = typer.Typer(
    name="demanager",
    help="Development environments (JupyterLab) behind the ModelArts DevEnviron API.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
server.register(app)
projects.register(app)
login.register(app)
instances.register(app)
events.register(instances.app)
catalog.register(app)
pools.register(app)
storage.register(app)
doctor.register(app)
backup.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
