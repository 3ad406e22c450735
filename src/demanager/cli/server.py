"""Server-side commands: ``serve``, ``tokens``, ``users`` and ``db``.

These talk to the store directly (they run where the server runs); every other
command goes through the HTTP API.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", envvar="DEMANAGER_DATA_DIR", help="Where state, volumes and logs live."
    ),
]

tokens_app = typer.Typer(
    help="Issue and revoke API tokens (run where the server runs).", no_args_is_help=True
)
users_app = typer.Typer(help="Manage users (run where the server runs).", no_args_is_help=True)
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command()(serve)
    app.add_typer(tokens_app, name="tokens")
    app.add_typer(users_app, name="users")
    app.add_typer(db_app, name="db")


def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    data_dir: DataDir = None,
    backend: Annotated[str | None, typer.Option(help="Backend: process or fake.")] = None,
    catalog: Annotated[Path | None, typer.Option(help="Catalog YAML file.")] = None,
    log_level: Annotated[str | None, typer.Option(help="debug, info, warning, error.")] = None,
) -> None:
    """Run the API server and the engine (SQLite and the process backend by default)."""
    import uvicorn

    from demanager.api.app import create_app
    from demanager.engine.runtime import operator_token
    from demanager.settings import load_settings

    settings = load_settings(
        host=host,
        port=port,
        data_dir=data_dir,
        backend=backend,
        catalog_file=catalog,
        log_level=log_level,
    )
    _configure_logging(settings.log_level)
    # Whatever the server writes is private unless it says otherwise (the data dir,
    # volumes and shared object-storage folders set their modes explicitly).
    os.umask(0o077)
    token = operator_token(settings)
    url = settings.target_domain
    database = settings.sqlalchemy_url.split("@")[-1]
    typer.echo(f"demanager serving at {url}  (backend: {settings.backend}, database: {database})")
    typer.echo(f"operator token: {token}")
    typer.echo(
        f"try: curl -H 'X-Auth-Token: {token}' "
        f"'{url}/v1/myproject/demanager/instances?de_type=Notebook'"
    )
    sys.stdout.flush()
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=settings.log_level == "debug",
        timeout_graceful_shutdown=5,
    )


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # One line per health probe would drown everything else.
    logging.getLogger("httpx").setLevel(logging.WARNING)


async def _with_store(data_dir: Path | None, work):  # type: ignore[no-untyped-def]
    from demanager.engine.runtime import prepare_data_dir
    from demanager.settings import load_settings
    from demanager.store.database import make_engine, make_sessionmaker, upgrade
    from demanager.store.identity import IdentityRepository

    settings = load_settings(data_dir=data_dir)
    prepare_data_dir(settings)
    await asyncio.to_thread(upgrade, settings.sqlalchemy_url)
    engine = make_engine(settings.sqlalchemy_url)
    try:
        return await work(IdentityRepository(make_sessionmaker(engine)))
    finally:
        await engine.dispose()


@tokens_app.command("create")
def tokens_create(
    project: Annotated[str, typer.Option(help="Project the token is bound to.")],
    user: Annotated[str, typer.Option(help="User name (created if new).")],
    data_dir: DataDir = None,
    expires_in: Annotated[
        int | None, typer.Option(help="Lifetime in seconds (default: none).")
    ] = None,
) -> None:
    """Issue a token bound to PROJECT and USER; prints it as the last line."""
    import time

    async def work(identity):  # type: ignore[no-untyped-def]
        now = time.time_ns() // 1_000_000
        account = await identity.ensure_user(user, now_ms=now)
        expires = now + expires_in * 1000 if expires_in else None
        return await identity.issue_token(account, project, now_ms=now, expires_at=expires)

    token = asyncio.run(_with_store(data_dir, work))
    typer.echo(f"token for user {user} in project {project}:", err=True)
    typer.echo(token)


@tokens_app.command("revoke")
def tokens_revoke(token: str, data_dir: DataDir = None) -> None:
    """Revoke TOKEN: it answers ModelArts.6620 from now on."""

    async def work(identity):  # type: ignore[no-untyped-def]
        return await identity.revoke(token)

    if not asyncio.run(_with_store(data_dir, work)):
        typer.echo("error: no such token", err=True)
        raise typer.Exit(1)
    typer.echo("revoked")


@users_app.command("disable")
def users_disable(name: str, data_dir: DataDir = None) -> None:
    """Disable user NAME: their tokens answer ModelArts.6608."""

    async def work(identity):  # type: ignore[no-untyped-def]
        await identity.set_enabled(name, False)

    asyncio.run(_with_store(data_dir, work))
    typer.echo(f"disabled {name}")


@users_app.command("enable")
def users_enable(name: str, data_dir: DataDir = None) -> None:
    """Enable user NAME again."""

    async def work(identity):  # type: ignore[no-untyped-def]
        await identity.set_enabled(name, True)

    asyncio.run(_with_store(data_dir, work))
    typer.echo(f"enabled {name}")


@db_app.command("upgrade")
def db_upgrade(data_dir: DataDir = None) -> None:
    """Apply database migrations (the server also does this at start)."""
    from demanager.engine.runtime import prepare_data_dir
    from demanager.settings import load_settings
    from demanager.store.database import upgrade

    settings = load_settings(data_dir=data_dir)
    prepare_data_dir(settings)
    upgrade(settings.sqlalchemy_url)
    typer.echo("database is up to date")
