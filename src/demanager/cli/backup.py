"""``demanager backup`` and ``restore``: the embedded database and the data dir's secrets.

They run where the server runs. A backup is taken while the server serves (SQLite's
online backup API); a restore needs the server stopped, then the server's next start
adopts the workloads still running, as after a crash. With PostgreSQL the database is
the database server's to back up (``pg_dump``): these commands say how and exit 2.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from demanager.cli.server import DataDir

if TYPE_CHECKING:
    from demanager.settings import Settings

POSTGRES_BACKUP = """\
error: the database is PostgreSQL; back it up with PostgreSQL's own tools, e.g.
  pg_dump --format=custom --file=demanager.dump "$URL"
where URL is DEMANAGER_DATABASE_URL without '+asyncpg', and keep the data dir's
server.key (unless DEMANAGER_SECRET_KEY is set) and operator-token with it
(docs/operations.md, Upgrades and backups)."""

POSTGRES_RESTORE = """\
error: the database is PostgreSQL; restore it with PostgreSQL's own tools, e.g.
  pg_restore --clean --if-exists --no-owner --dbname="$URL" demanager.dump
then put server.key and operator-token back in the data dir and run
`demanager db upgrade` (docs/operations.md, Upgrades and backups)."""


def register(app: typer.Typer) -> None:
    app.command()(backup)
    app.command()(restore)


def _sqlite_database(settings: Settings, refusal: str) -> Path:
    """The SQLite file behind the settings' URL; for any other database, ``refusal`` and
    exit code 2."""
    from sqlalchemy.engine import make_url

    url = make_url(settings.sqlalchemy_url)
    if not url.drivername.startswith("sqlite") or not url.database or url.database == ":memory:":
        typer.echo(refusal if url.drivername.startswith("postgresql") else
                   f"error: cannot back up or restore a {url.drivername} database", err=True)
        raise typer.Exit(2)
    return Path(url.database)


def backup(
    dest: Annotated[Path, typer.Argument(help="A new directory to hold the backup.")],
    data_dir: DataDir = None,
) -> None:
    """Back up the SQLite database (while the server runs) and the data dir's secrets
    into the new directory DEST (mode 0700, files 0600). Volumes are not included."""
    from demanager import __version__
    from demanager.settings import load_settings
    from demanager.store.backup import BackupError, create_backup

    settings = load_settings(data_dir=data_dir)
    database = _sqlite_database(settings, POSTGRES_BACKUP)
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    try:
        manifest = create_backup(database, settings.data_dir, dest.resolve(), created_at=now,
                                 version=__version__)
    except (BackupError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"backed up schema revision {manifest.revision or 'none'} to {dest}: "
               f"{', '.join(sorted(manifest.files))}")


def restore(
    src: Annotated[Path, typer.Argument(help="A directory `demanager backup` wrote.")],
    force: Annotated[
        bool,
        typer.Option("--force", help="Restore even while a server serves from the data dir."),
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """Replace the SQLite database and the data dir's secrets with backup SRC, then
    upgrade the database to this release's schema. The server must be stopped; its next
    start adopts the workloads that are still running."""
    from alembic.script import ScriptDirectory

    from demanager.engine.runtime import prepare_data_dir
    from demanager.settings import load_settings
    from demanager.store.backup import BackupError, exclusive_data_dir, read_backup, restore_backup
    from demanager.store.database import alembic_config, upgrade

    settings = load_settings(data_dir=data_dir)
    database = _sqlite_database(settings, POSTGRES_RESTORE)
    try:
        manifest = read_backup(src)
        script = ScriptDirectory.from_config(alembic_config(settings.sqlalchemy_url))
        known = {rev.revision for rev in script.walk_revisions()}
        if manifest.revision is not None and manifest.revision not in known:
            raise BackupError(
                f"the backup's schema revision {manifest.revision} is newer than this "
                f"release's ({script.get_current_head()}): restore it with the "
                f"demanager {manifest.version} that wrote it, or a later one"
            )
        prepare_data_dir(settings)
        with exclusive_data_dir(settings.data_dir, force=force):
            restore_backup(src, manifest, database, settings.data_dir)
            upgrade(settings.sqlalchemy_url)
    except (BackupError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"restored the backup of {manifest.created_at} (schema revision "
               f"{manifest.revision or 'none'}); the database is at revision "
               f"{script.get_current_head()}")
