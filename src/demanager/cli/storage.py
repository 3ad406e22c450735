"""``demanager storage``: a project's own object-storage keys, and the buckets the
deployment's keys serve for each project (``docs/storage.md``, Credentials).

Like ``projects`` these run where the server runs and change the store directly; the
server reads keys and grants at each use. A secret key is never a command-line
argument, which shell history and ``ps`` would keep: it is typed at a hidden prompt or
read from standard input.
"""

from __future__ import annotations

import asyncio
import datetime
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from demanager.cli.server import DataDir

if TYPE_CHECKING:
    from demanager.store.objectaccess import AccessListing, ObjectAccessRepository

T = TypeVar("T")

storage_app = typer.Typer(
    help="Object storage per project: its own keys, and the buckets the deployment's keys "
    "serve for it (run where the server runs).",
    no_args_is_help=True,
)
keys_app = typer.Typer(
    help="A project's own access key (AK/SK), used instead of the deployment's.",
    no_args_is_help=True,
)
storage_app.add_typer(keys_app, name="keys")

MAX_ACCESS_KEY_ID = 128
MAX_SECRET = 256


def _project(value: str) -> str:
    if not 1 <= len(value) <= 64:
        raise typer.BadParameter("must be 1 to 64 characters")
    return value


def _bucket(value: str) -> str:
    from demanager.store.objectaccess import is_bucket_name

    if not is_bucket_name(value):
        raise typer.BadParameter(
            "a bucket name is 3 to 63 lowercase letters, digits, '.' and '-', beginning "
            "and ending with a letter or digit"
        )
    return value


def _key_text(value: str, most: int) -> str | None:
    """Why ``value`` cannot be a key (None: it can): keys are printable, unspaced text."""
    if not value:
        return "is empty"
    if len(value) > most:
        return f"is longer than {most} characters"
    if any(c.isspace() or not c.isprintable() for c in value):
        return "has spaces or control characters"
    return None


def _access_key_id(value: str) -> str:
    problem = _key_text(value, MAX_ACCESS_KEY_ID)
    if problem:
        raise typer.BadParameter(problem)
    return value


ProjectArg = Annotated[
    str, typer.Argument(help="The project id, as in the API paths.", callback=_project)
]
BucketArg = Annotated[str, typer.Argument(help="The bucket's name.", callback=_bucket)]


def register(app: typer.Typer) -> None:
    app.add_typer(storage_app, name="storage")


async def _with_repository(
    data_dir: Path | None, work: Callable[[ObjectAccessRepository], Awaitable[T]]
) -> T:
    from demanager.engine.runtime import prepare_data_dir
    from demanager.identity.secrets import load_server_key
    from demanager.settings import load_settings
    from demanager.store.database import make_engine, make_sessionmaker, upgrade
    from demanager.store.objectaccess import ObjectAccessRepository

    settings = load_settings(data_dir=data_dir)
    prepare_data_dir(settings)
    # The key the server encrypts and decrypts with: the configured one, or the data dir's.
    key = load_server_key(settings.data_dir, settings.secret_key)
    await asyncio.to_thread(upgrade, settings.sqlalchemy_url)
    engine = make_engine(settings.sqlalchemy_url)
    try:
        return await work(ObjectAccessRepository(make_sessionmaker(engine), key))
    finally:
        await engine.dispose()


def _run(data_dir: Path | None, work: Callable[[ObjectAccessRepository], Awaitable[T]]) -> T:
    """Run ``work``; a refusal is one line on stderr and exit code 1, settings or a data
    dir the server could not start with exit code 2."""
    from pydantic import ValidationError

    from demanager.errors import DemanagerError

    try:
        return asyncio.run(_with_repository(data_dir, work))
    except DemanagerError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    except (ValidationError, OSError) as exc:
        typer.echo(f"error: {str(exc).splitlines()[0]}", err=True)
        raise typer.Exit(2) from None


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _when(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC).strftime(
        "%Y-%m-%d %H:%M:%SZ"
    )


def _read_secret(from_stdin: bool) -> str:
    if from_stdin:
        # One line, as `printf '%s\n' "$SK" |` or a file gives it.
        secret = sys.stdin.readline().rstrip("\r\n")
    else:
        secret = typer.prompt("Secret access key", hide_input=True, confirmation_prompt=True)
    problem = _key_text(secret, MAX_SECRET)
    if problem:
        raise typer.BadParameter(f"the secret access key {problem}", param_hint="SECRET")
    return secret


@keys_app.command("set")
def keys_set(
    project: ProjectArg,
    access_key_id: Annotated[
        str,
        typer.Option("--access-key-id", help="The access key (AK); it is shown by list.",
                     callback=_access_key_id),
    ],
    secret_stdin: Annotated[
        bool,
        typer.Option("--secret-access-key-stdin",
                     help="Read the secret key (SK) from the first line of standard input "
                     "instead of a hidden prompt."),
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """Give PROJECT its own access key: the server then reaches the project's buckets
    with it, as far as the store's own policy allows, instead of the deployment's keys.
    The secret is asked for at a hidden prompt and kept encrypted under the server key."""
    from pydantic import SecretStr

    secret = SecretStr(_read_secret(secret_stdin))

    async def work(repo: ObjectAccessRepository) -> None:
        await repo.set_keys(project, access_key_id, secret, now_ms=_now_ms())

    _run(data_dir, work)
    typer.echo(f"project {project}: access key {access_key_id} set")


@keys_app.command("clear")
def keys_clear(project: ProjectArg, data_dir: DataDir = None) -> None:
    """Forget PROJECT's own keys: it is back to the deployment's keys and its grants."""

    async def work(repo: ObjectAccessRepository) -> bool:
        return await repo.clear_keys(project)

    cleared = _run(data_dir, work)
    typer.echo(f"project {project}: keys cleared" if cleared else
               f"project {project} had no keys")


@storage_app.command("grant")
def storage_grant(
    bucket: BucketArg,
    project: ProjectArg,
    move: Annotated[
        bool,
        typer.Option("--move", help="Take the bucket from the project it is granted to."),
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """Let the deployment's keys serve BUCKET for PROJECT. A bucket is granted to one
    project at most; one granted to another project is refused unless --move."""

    async def work(repo: ObjectAccessRepository) -> str | None:
        return await repo.grant(bucket, project, move=move, now_ms=_now_ms())

    previous = _run(data_dir, work)
    if previous is None:
        typer.echo(f"granted bucket {bucket} to project {project}")
    elif previous == project:
        typer.echo(f"bucket {bucket} was already granted to project {project}")
    else:
        typer.echo(f"moved bucket {bucket} from project {previous} to project {project}")


@storage_app.command("revoke")
def storage_revoke(bucket: BucketArg, data_dir: DataDir = None) -> None:
    """Take BUCKET back: the deployment's keys serve it for no project. Instances that
    use it keep their data in the bucket; their next sync is refused (ModelArts.6320)."""

    async def work(repo: ObjectAccessRepository) -> str | None:
        return await repo.revoke(bucket)

    previous = _run(data_dir, work)
    typer.echo(f"revoked bucket {bucket} from project {previous}" if previous else
               f"bucket {bucket} was not granted")


@storage_app.command("list")
def storage_list(data_dir: DataDir = None) -> None:
    """List the projects with their own keys (the access key; of the secret only whether
    this server can read it) and the granted buckets."""

    async def work(repo: ObjectAccessRepository) -> AccessListing:
        return await repo.list()

    listing = _run(data_dir, work)
    tables: list[list[str]] = []
    if listing.keys:
        tables.append(["PROJECT\tACCESS KEY ID\tSECRET\tUPDATED"] + [
            f"{k.project_id}\t{k.access_key_id}\t"
            f"{'set' if k.readable else 'unreadable (server key changed: set again)'}\t"
            f"{_when(k.updated_at)}"
            for k in listing.keys
        ])
    if listing.grants:
        tables.append(["BUCKET\tPROJECT\tGRANTED"] + [
            f"{g.bucket}\t{g.project_id}\t{_when(g.granted_at)}" for g in listing.grants
        ])
    if tables:
        typer.echo("\n\n".join("\n".join(table) for table in tables))
