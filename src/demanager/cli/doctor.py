"""``demanager doctor``: what keeps this server from working here, one line each.

It reads the same settings as ``serve`` and checks the settings and the catalog, the
database (reachable, schema current) and the chosen backend (``Backend.check``: its
daemon or cluster, permissions, images). Where the server counts its host (the process
backend), it shows the host's CPUs, memory and GPUs and names the flavors that host can
never fit: those are always sold out there. It migrates, starts and stops nothing; a
backend may create its own folders in the data dir, as at every start.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from demanager.backends.base import Backend
    from demanager.domain.catalog import Catalog
    from demanager.settings import Settings

OK, PROBLEM = "ok", "problem"


def register(app: typer.Typer) -> None:
    app.command()(doctor)


def doctor(
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", envvar="DEMANAGER_DATA_DIR",
                                  help="Where state, volumes and logs live.")
    ] = None,
    backend: Annotated[
        str | None, typer.Option(help="Backend to check: process, docker, kubernetes, fake.")
    ] = None,
    catalog: Annotated[Path | None, typer.Option(help="Catalog YAML file.")] = None,
) -> None:
    """Check the settings, the database and the backend; exit 1 if anything is wrong."""
    problems = asyncio.run(_diagnose(data_dir, backend, catalog))
    if problems:
        raise typer.Exit(1)


def _say(kind: str, line: str) -> None:
    typer.secho(f"{kind:>7}  {line}", fg="green" if kind == OK else "red")


async def _diagnose(data_dir: Path | None, backend: str | None, catalog_file: Path | None) -> int:
    from pydantic import ValidationError

    from demanager.catalog import load_catalog
    from demanager.domain.catalog import CatalogError
    from demanager.engine.runtime import UnknownBackend, load_backend
    from demanager.settings import load_settings

    try:
        settings = load_settings(data_dir=data_dir, backend=backend, catalog_file=catalog_file)
    except (ValidationError, ValueError, OSError) as exc:
        _say(PROBLEM, f"settings: {_first_line(exc)}")
        return 1
    try:
        catalog = load_catalog(settings.catalog_file)
    except (CatalogError, OSError) as exc:
        _say(PROBLEM, f"catalog: {exc}")
        return 1
    _say(OK, f"catalog: {len(catalog.profiles)} profiles, {len(catalog.flavors)} flavors")
    problems = await _database(settings.sqlalchemy_url)
    _host(settings, catalog)
    problems += _obsfs(settings)
    try:
        built = await asyncio.to_thread(load_backend, settings, catalog)
    except (UnknownBackend, CatalogError) as exc:
        _say(PROBLEM, f"backend {settings.backend}: {exc}")
        return problems + 1
    except Exception as exc:
        _say(PROBLEM, f"backend {settings.backend} cannot start: {_first_line(exc)}")
        return problems + 1
    try:
        found = await built.check()
        missing_images = getattr(built, "missing_images", None)
        if missing_images is not None:
            found += await missing_images(_images(catalog, built))
    finally:
        await built.close()
    for line in found:
        _say(PROBLEM, f"backend {settings.backend}: {line}")
    if not found:
        _say(OK, f"backend {settings.backend}: ready")
    return problems + len(found)


async def _database(url: str) -> int:
    from sqlalchemy import make_url

    from demanager.store.database import make_engine, schema_revisions

    parsed = make_url(url)
    where = parsed.render_as_string(hide_password=True)
    file = parsed.database if parsed.get_backend_name() == "sqlite" else None
    if file and file != ":memory:" and not os.path.exists(file):  # noqa: ASYNC240 - one stat
        _say(OK, f"database {where}: not created yet (the first start creates it)")
        return 0
    engine = make_engine(url)
    try:
        current, head = await asyncio.wait_for(schema_revisions(engine), 10)
    except Exception as exc:
        _say(PROBLEM, f"database {where}: unreachable: {_first_line(exc)}")
        return 1
    finally:
        await engine.dispose()
    if current != head:
        _say(PROBLEM, f"database {where}: schema at {current or 'nothing'}, this release "
                      f"needs {head}: run `demanager db upgrade` (serve does it at start)")
        return 1
    _say(OK, f"database {where}: schema current ({head})")
    return 0


def _host(settings: Settings, catalog: Catalog) -> None:
    """The host the store counts, and the flavors it cannot fit even empty. Not a
    problem: a catalog may well offer sizes only some deployments can run."""
    from demanager.domain.hostfit import amounts, fits
    from demanager.engine.runtime import host_inventory

    inventory = host_inventory(settings, settings.backend)
    if inventory is None:
        return
    parts = []
    if inventory.cpus is not None:
        over = f" x{inventory.cpu_overcommit:g}" if inventory.cpu_overcommit != 1 else ""
        parts.append(f"{inventory.cpus:g} CPUs{over}")
    if inventory.memory_bytes is not None:
        parts.append(f"{inventory.memory_bytes / 2**30:.1f} GiB memory")
    if inventory.gpus is not None:
        parts.append(f"GPUs {','.join(inventory.gpus)}" if inventory.gpus else "no GPU")
    _say(OK, f"host {inventory.host}: {', '.join(parts)}")
    never = sorted(
        name for name, flavor in catalog.flavors.items()
        if not fits(amounts(flavor.resources, inventory), {}, inventory.limits())
    )
    if never:
        _say(OK, f"host {inventory.host}: sold out for good here: {', '.join(never)}")


def _obsfs(settings: Settings) -> int:
    """How the process backend gives notebooks whole buckets (obsfs), and why."""
    from demanager.backends.fusemounts import FuseUnavailable, choose

    if settings.backend != "process" or not settings.s3.configured:
        return 0
    try:
        choice = choose(settings.s3)
    except FuseUnavailable as exc:
        _say(PROBLEM, f"obsfs buckets: {exc}")
        return 1
    _say(OK, f"obsfs buckets: {choice.why}")
    return 0


def _images(catalog: Catalog, backend: Backend) -> list[str]:
    """The images the catalog's profiles run on a container backend."""
    from demanager.backends.base import recipe_of

    images = set()
    for profile in catalog.profiles.values():
        recipe = recipe_of(backend.recipe_type, backend.name, profile)
        images.add(getattr(recipe, "image", None) or profile.image)
    return sorted(images)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
