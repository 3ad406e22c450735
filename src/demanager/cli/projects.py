"""``demanager projects``: instance quotas and freezing, per project.

Like ``users`` and ``tokens`` these run where the server runs and change the store
directly; a running server applies each change to the next request. Frozen is a flag,
not a status (contract §4.1): a frozen project's instances keep their status, and
create, start, restart and queue answer ModelArts.6326.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from demanager.cli.server import DataDir

if TYPE_CHECKING:
    from demanager.engine.projects import Frozen, ProjectAdmin
    from demanager.store.projects import ProjectState

T = TypeVar("T")

projects_app = typer.Typer(
    help="Instance quotas and frozen projects and instances (run where the server runs).",
    no_args_is_help=True,
)

ProjectArg = Annotated[str, typer.Argument(help="The project id, as in the API paths.")]
InstanceArg = Annotated[str, typer.Argument(help="The instance id (DE-…).")]
StopOption = Annotated[
    bool,
    typer.Option(
        "--stop",
        help="Also ask the running instances to stop (the server stops them at its next "
        "sweep); without it, what runs goes on running.",
    ),
]


def register(app: typer.Typer) -> None:
    app.add_typer(projects_app, name="projects")


def _project(value: str) -> str:
    if not 1 <= len(value) <= 64:
        raise typer.BadParameter("must be 1 to 64 characters", param_hint="PROJECT")
    return value


async def _with_admin(data_dir: Path | None, work: Callable[[ProjectAdmin], Awaitable[T]]) -> T:
    from demanager.catalog import load_catalog
    from demanager.engine.clock import SystemClock
    from demanager.engine.projects import ProjectAdmin
    from demanager.engine.runtime import prepare_data_dir
    from demanager.engine.service import InstanceService
    from demanager.settings import load_settings
    from demanager.store.database import make_engine, make_sessionmaker, upgrade
    from demanager.store.instances import InstanceRepository
    from demanager.store.projects import ProjectRepository

    settings = load_settings(data_dir=data_dir)
    catalog = load_catalog(settings.catalog_file)
    prepare_data_dir(settings)
    await asyncio.to_thread(upgrade, settings.sqlalchemy_url)
    engine = make_engine(settings.sqlalchemy_url)
    try:
        sessions = make_sessionmaker(engine)
        projects = ProjectRepository(sessions)
        clock = SystemClock()
        service = InstanceService(
            repository=InstanceRepository(sessions, catalog),
            projects=projects,
            catalog=catalog,
            clock=clock,
            # No engine here: the server's sweep finds the stops within its interval.
            notify=lambda _instance_id: None,
            instance_quota=settings.instance_quota,
            min_auto_stop=settings.min_auto_stop_seconds,
            object_storage=settings.object_storage,
        )
        admin = ProjectAdmin(
            projects=projects, service=service, clock=clock,
            default_quota=settings.instance_quota,
        )
        return await work(admin)
    finally:
        await engine.dispose()


def _run(data_dir: Path | None, work: Callable[[ProjectAdmin], Awaitable[T]]) -> T:
    """Run ``work``; a refusal is one line on stderr and exit code 1, a catalog the
    server could not start with exit code 2."""
    from demanager.domain.catalog import CatalogError
    from demanager.errors import DemanagerError, ProjectFrozen

    try:
        return asyncio.run(_with_admin(data_dir, work))
    except ProjectFrozen as exc:
        typer.echo(f"error: project {exc.project_id!r} is frozen; unfreeze the project "
                   "instead (`demanager projects unfreeze`)", err=True)
        raise typer.Exit(1) from None
    except DemanagerError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    except (CatalogError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _stopped(result: Frozen) -> str:
    text = f"; asked {_count(result.stopping, 'running instance')} to stop"
    if result.under_way:
        text += (f"; {_count(result.under_way, 'instance')} still starting, not stopped "
                 "(run this again once they run)")
    return text


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


@projects_app.command("list")
def projects_list(data_dir: DataDir = None) -> None:
    """List projects with settings or live instances: id, instance quota, live and
    frozen instances, and whether the project is frozen."""

    async def work(admin: ProjectAdmin) -> tuple[int, list[ProjectState]]:
        return admin.default_quota, await admin.list()

    default, projects = _run(data_dir, work)
    for p in projects:
        quota = p.settings.instance_quota
        shown = f"quota {default} (default)" if quota is None else f"quota {quota}"
        state = "frozen" if p.settings.frozen else "active"
        typer.echo(f"{p.settings.project_id}\t{shown}\t{p.live} live\t"
                   f"{p.frozen_instances} frozen\t{state}")


@projects_app.command("quota")
def projects_quota(
    project: ProjectArg,
    limit: Annotated[
        int | None, typer.Argument(help="Live instances the project may have.", min=0)
    ] = None,
    default: Annotated[
        bool, typer.Option("--default", help="Back to the default, DEMANAGER_INSTANCE_QUOTA.")
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """Set how many live instances PROJECT may have (ModelArts.6302 beyond). Instances
    over a lowered quota are kept; new ones are refused until the project is under it."""
    project = _project(project)
    if (limit is None) == (not default):
        raise typer.BadParameter("give either a number or --default", param_hint="LIMIT")

    async def work(admin: ProjectAdmin) -> int:
        await admin.set_quota(project, None if default else limit)
        return admin.default_quota

    server_default = _run(data_dir, work)
    if default:
        typer.echo(f"project {project}: instance quota {server_default} (the default)")
    else:
        typer.echo(f"project {project}: instance quota {limit}")


@projects_app.command("freeze")
def projects_freeze(project: ProjectArg, stop: StopOption = False,
                    data_dir: DataDir = None) -> None:
    """Freeze PROJECT and each of its instances: create, start, restart and queue answer
    ModelArts.6326, queued instances wait, and every status stays as it is."""
    project = _project(project)

    async def work(admin: ProjectAdmin) -> Frozen:
        return await admin.freeze(project, stop=stop)

    result = _run(data_dir, work)
    text = f"froze project {project} and {_count(result.frozen, 'instance')}"
    typer.echo(text + (_stopped(result) if stop else ""))


@projects_app.command("unfreeze")
def projects_unfreeze(project: ProjectArg, data_dir: DataDir = None) -> None:
    """Unfreeze PROJECT and every instance of it, those frozen one by one included."""
    project = _project(project)

    async def work(admin: ProjectAdmin) -> int:
        return await admin.unfreeze(project)

    thawed = _run(data_dir, work)
    typer.echo(f"unfroze project {project} and {_count(thawed, 'instance')}")


@projects_app.command("freeze-instance")
def projects_freeze_instance(instance: InstanceArg, stop: StopOption = False,
                             data_dir: DataDir = None) -> None:
    """Freeze one INSTANCE: start, restart and queue answer ModelArts.6326."""

    async def work(admin: ProjectAdmin) -> Frozen:
        return await admin.freeze_instance(instance, stop=stop)

    result = _run(data_dir, work)
    text = f"froze {instance}" if result.frozen else f"{instance} was already frozen"
    typer.echo(text + (_stopped(result) if stop else ""))


@projects_app.command("unfreeze-instance")
def projects_unfreeze_instance(instance: InstanceArg, data_dir: DataDir = None) -> None:
    """Unfreeze one INSTANCE (not one of a frozen project: unfreeze the project)."""

    async def work(admin: ProjectAdmin) -> bool:
        return await admin.unfreeze_instance(instance)

    changed = _run(data_dir, work)
    typer.echo(f"unfroze {instance}" if changed else f"{instance} was not frozen")

