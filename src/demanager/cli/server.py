"""Server-side commands: ``serve``, ``tokens``, ``users`` and ``db``.

These talk to the store directly (they run where the server runs); every other
command goes through the HTTP API.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from demanager.cli.serving import configure_logging

if TYPE_CHECKING:
    from demanager.settings import Settings

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", envvar="DEMANAGER_DATA_DIR", help="Where state, volumes and logs live."
    ),
]

tokens_app = typer.Typer(
    help="Issue, list and revoke API tokens (run where the server runs).", no_args_is_help=True
)
users_app = typer.Typer(
    help="Users, their projects and roles (run where the server runs).", no_args_is_help=True
)
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
    backend: Annotated[
        str | None,
        typer.Option(help="Backend: process, docker, kubernetes, or an installed plugin's name."),
    ] = None,
    catalog: Annotated[Path | None, typer.Option(help="Catalog YAML file.")] = None,
    log_level: Annotated[str | None, typer.Option(help="debug, info, warning, error.")] = None,
) -> None:
    """Run the API server and the engine (SQLite and the process backend by default)."""
    from pydantic import ValidationError

    from demanager.settings import load_settings

    options = {"host": host, "port": port, "data_dir": data_dir, "backend": backend,
               "catalog_file": catalog, "log_level": log_level}
    try:
        settings = load_settings(**options)
    except ValidationError as exc:
        for error in exc.errors():
            where = "__".join(str(part) for part in error["loc"]).upper()
            typer.echo(f"error: {'DEMANAGER_' + where if where else 'settings'}: "
                       f"{error['msg']}", err=True)
        raise typer.Exit(2) from None
    configure_logging(settings)
    _preflight(settings)
    # Checked: now the server proper, in place of this process (same PID, signals and
    # output) and without the command line's libraries, which it would otherwise keep
    # in memory for its whole life (docs/benchmarks.md, Peers).
    given = {k: str(v) if isinstance(v, Path) else v for k, v in options.items()
             if v is not None}
    sys.stdout.flush()
    sys.stderr.flush()
    # -P: the working directory is not put on the import path.
    os.execve(sys.executable, [sys.executable, "-P", "-m", "demanager.cli.serving",
                               json.dumps(given)], server_environment(os.environ))


MALLOC_ARENAS = "2"
"""glibc's malloc arenas in the server process, unless ``MALLOC_ARENA_MAX`` is set."""


def server_environment(env: Mapping[str, str]) -> dict[str, str]:
    """The server process's environment: this one, with at most two malloc arenas.

    glibc gives each thread that allocates an arena of its own, up to eight per core,
    and the server's threads (aiosqlite's, one per pooled connection; the default
    executor's) each kept a few hundred KiB of freed memory in theirs: about 3 MiB of
    the control plane's RSS (docs/benchmarks.md, Peers). The event loop's thread does
    nearly all the allocating, so two arenas cost no measurable speed. Notebooks never
    see the variable (``sandbox.notebook_env`` passes only locale and terminal
    settings)."""
    return {"MALLOC_ARENA_MAX": MALLOC_ARENAS, **env}


def _preflight(settings: Settings) -> None:
    """A wrong backend name, backend section or catalog is one line and exit code 2, not a
    traceback from inside the server's start (``demanager doctor`` says more)."""
    from pydantic import ValidationError

    from demanager.backends.fusemounts import FuseUnavailable, choose
    from demanager.catalog import load_catalog
    from demanager.domain.catalog import CatalogError
    from demanager.engine.runtime import UnknownBackend, backend_class, check_backend_settings

    try:
        catalog = load_catalog(settings.catalog_file)
        check_backend_settings(backend_class(settings.backend), settings, catalog)
        if settings.backend == "process" and settings.s3.configured:
            choose(settings.s3)
    except (UnknownBackend, CatalogError, ValidationError, OSError, FuseUnavailable) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


async def _with_identity(data_dir: Path | None, work):  # type: ignore[no-untyped-def]
    import time

    from demanager.engine.runtime import build_identity, prepare_data_dir
    from demanager.settings import load_settings
    from demanager.store.database import make_engine, make_sessionmaker, upgrade

    settings = load_settings(data_dir=data_dir)
    prepare_data_dir(settings)
    await asyncio.to_thread(upgrade, settings.sqlalchemy_url)
    engine = make_engine(settings.sqlalchemy_url)
    try:
        identity = await build_identity(
            settings, make_sessionmaker(engine), lambda: time.time_ns() // 1_000_000
        )
        return await work(identity)
    finally:
        await engine.dispose()


def _run(data_dir: Path | None, work):  # type: ignore[no-untyped-def]
    """Run ``work(identity)``; an identity error is a one-line message and exit code 1."""
    from demanager.errors import IdentityError

    try:
        return asyncio.run(_with_identity(data_dir, work))
    except IdentityError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None


def _when(ms: int | None) -> str:
    if ms is None:
        return "never"
    import datetime

    return datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


RoleOption = Annotated[
    str, typer.Option("--role", help="admin (every instance of the project) or member (own).")
]
Project = Annotated[str, typer.Option("--project", help="Project the user belongs to.")]


def _role(value: str):  # type: ignore[no-untyped-def]
    from demanager.identity.principal import Role

    try:
        return Role(value)
    except ValueError:
        raise typer.BadParameter("must be admin or member", param_hint="--role") from None


@users_app.command("create")
def users_create(
    name: str,
    project: Project,
    role: RoleOption = "member",
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """Create user NAME in PROJECT. Without --password-stdin the user signs in with
    tokens only (see `tokens create`)."""
    chosen = _role(role)
    password = None
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            typer.echo("error: the password read from standard input is empty", err=True)
            raise typer.Exit(1)

    async def work(identity):  # type: ignore[no-untyped-def]
        return await identity.create_user(name, project_id=project, role=chosen,
                                          password=password)

    _run(data_dir, work)
    kind = "password" if password is not None else "token-only"
    typer.echo(f"created {kind} user {name}: {chosen.value} of project {project}")


@users_app.command("add")
def users_add(name: str, project: Project, role: RoleOption = "member",
              data_dir: DataDir = None) -> None:
    """Give user NAME a role in another PROJECT (or change their role there)."""
    chosen = _role(role)

    async def work(identity):  # type: ignore[no-untyped-def]
        await identity.add_to_project(name, project_id=project, role=chosen)

    _run(data_dir, work)
    typer.echo(f"{name} is {chosen.value} of project {project}")


@users_app.command("list")
def users_list(data_dir: DataDir = None) -> None:
    """List users, how they sign in and their role in each project."""

    async def work(identity):  # type: ignore[no-untyped-def]
        return await identity.accounts()

    for account in _run(data_dir, work):
        roles = ", ".join(f"{p}:{r}" for p, r in account.roles.items()) or "-"
        state = "enabled" if account.user.enabled else "disabled"
        sign_in = "password" if account.has_password else "token-only"
        typer.echo(f"{account.user.name}\t{state}\t{sign_in}\t{roles}")


@users_app.command("delete")
def users_delete(name: str, data_dir: DataDir = None) -> None:
    """Delete user NAME and revoke all their tokens (their instances are kept)."""

    async def work(identity):  # type: ignore[no-untyped-def]
        return await identity.delete_user(name)

    if not _run(data_dir, work):
        typer.echo(f"error: no user named {name!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"deleted {name}")


@tokens_app.command("create")
def tokens_create(
    project: Annotated[str, typer.Option(help="Project the token is bound to.")],
    user: Annotated[str, typer.Option(help="User name (a new name becomes a member).")],
    data_dir: DataDir = None,
    expires_in: Annotated[
        int | None, typer.Option(help="Lifetime in seconds (default: none).", min=1)
    ] = None,
) -> None:
    """Issue a token bound to PROJECT and USER; prints it as the last line."""

    async def work(identity):  # type: ignore[no-untyped-def]
        return await identity.issue_for(user, project, ttl_seconds=expires_in)

    issued = _run(data_dir, work)
    typer.echo(f"token for user {user} in project {project}, expires {_when(issued.expires_at)}:",
               err=True)
    typer.echo(issued.token)


@tokens_app.command("list")
def tokens_list(
    user: Annotated[str | None, typer.Option(help="Only this user's tokens.")] = None,
    data_dir: DataDir = None,
) -> None:
    """List tokens (never their secret): id, user, project, created, expires, state."""

    async def work(identity):  # type: ignore[no-untyped-def]
        return await identity.tokens(user)

    for t in _run(data_dir, work):
        state = "revoked" if t.revoked else "active"
        typer.echo(f"{t.id}\t{t.user_name}\t{t.project_id or '-'}\t{_when(t.created_at)}"
                   f"\t{_when(t.expires_at)}\t{state}")


@tokens_app.command("revoke")
def tokens_revoke(token: str, data_dir: DataDir = None) -> None:
    """Revoke TOKEN (the token itself or its id from `tokens list`): it answers
    ModelArts.6620 from now on."""

    async def work(identity):  # type: ignore[no-untyped-def]
        return await identity.revoke(token)

    if not _run(data_dir, work):
        typer.echo("error: no such token", err=True)
        raise typer.Exit(1)
    typer.echo("revoked")


@users_app.command("disable")
def users_disable(name: str, data_dir: DataDir = None) -> None:
    """Disable user NAME: their tokens answer ModelArts.6608."""

    async def work(identity):  # type: ignore[no-untyped-def]
        return await identity.set_enabled(name, False)

    if not _run(data_dir, work):
        typer.echo(f"error: no user named {name!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"disabled {name}")


@users_app.command("enable")
def users_enable(name: str, data_dir: DataDir = None) -> None:
    """Enable user NAME again."""

    async def work(identity):  # type: ignore[no-untyped-def]
        return await identity.set_enabled(name, True)

    if not _run(data_dir, work):
        typer.echo(f"error: no user named {name!r}", err=True)
        raise typer.Exit(1)
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


@db_app.command("current")
def db_current(data_dir: DataDir = None) -> None:
    """Show the database's schema revision and the newest this release knows."""
    from demanager.engine.runtime import prepare_data_dir
    from demanager.settings import load_settings
    from demanager.store.database import make_engine, schema_revisions

    settings = load_settings(data_dir=data_dir)
    prepare_data_dir(settings)

    async def revisions() -> tuple[str | None, str | None]:
        engine = make_engine(settings.sqlalchemy_url)
        try:
            return await schema_revisions(engine)
        finally:
            await engine.dispose()

    current, head = asyncio.run(revisions())
    if current == head:
        typer.echo(f"{current} (head)")
    else:
        typer.echo(f"{current or 'empty'} (head is {head}: run `demanager db upgrade`)")


@db_app.command("history")
def db_history() -> None:
    """List the schema revisions this release knows, oldest first."""
    from alembic.script import ScriptDirectory

    from demanager.store.database import alembic_config

    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    for revision in reversed(list(script.walk_revisions())):
        typer.echo(f"{revision.revision}\t{(revision.doc or '').splitlines()[0]}")
