"""``demanager pools``: dedicated pools managed at run time (run where the server runs).

These commands write the database directly, like ``users`` and ``tokens``. A managed
pool replaces the catalog file's pool of the same id; every server sharing the
database puts a change in force within ``DEMANAGER_POOLS_REFRESH_SECONDS``.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from demanager.cli.server import DataDir

if TYPE_CHECKING:
    from demanager.domain.catalog import Catalog, Pool
    from demanager.store.pools import PoolRepository

pools_app = typer.Typer(
    help="Dedicated pools: capacity, owner project, ready (run where the server runs).",
    no_args_is_help=True,
)

CatalogFile = Annotated[
    Path | None,
    typer.Option(
        "--catalog",
        envvar="DEMANAGER_CATALOG_FILE",
        help="Catalog YAML file the server uses (its flavors bound the capacities).",
    ),
]

UNLIMITED = "unlimited"


def register(app: typer.Typer) -> None:
    app.add_typer(pools_app, name="pools")


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _run(data_dir: Path | None, catalog_file: Path | None, work: Any) -> Any:
    """Run ``work(repository, catalog)`` on the server's database, migrated first."""
    from demanager.catalog import load_catalog
    from demanager.domain.catalog import CatalogError

    try:
        from demanager.settings import load_settings

        settings = load_settings(data_dir=data_dir, catalog_file=catalog_file)
        catalog = load_catalog(settings.catalog_file)
    except (CatalogError, OSError, ValueError) as exc:
        raise _fail(str(exc).splitlines()[0], 2) from None
    return asyncio.run(_on_database(settings, catalog, work))


async def _on_database(settings: Any, catalog: Catalog, work: Any) -> Any:
    from demanager.engine.runtime import prepare_data_dir
    from demanager.store.database import make_engine, make_sessionmaker, upgrade
    from demanager.store.pools import PoolRepository

    prepare_data_dir(settings)
    await asyncio.to_thread(upgrade, settings.sqlalchemy_url)
    engine = make_engine(settings.sqlalchemy_url)
    try:
        return await work(PoolRepository(make_sessionmaker(engine)), catalog)
    finally:
        await engine.dispose()


def _describe(pool: Pool) -> str:
    state = "ready" if pool.ready else "not ready"
    owner = pool.owner_project or "any project"
    limits = ",".join(f"{name}={n}" for name, n in sorted(pool.capacity.items())) or "unlimited"
    return f"{pool.id}\t{pool.name}\t{state}\towner: {owner}\tcapacity: {limits}"


def _capacity(values: list[str], flavors: Any) -> dict[str, int | None]:
    """FLAVOR=N pairs; N ``unlimited`` removes the flavor's limit (``None``)."""
    parsed: dict[str, int | None] = {}
    for value in values:
        name, sep, number = value.partition("=")
        if not sep or not name:
            raise _fail(f"--capacity {value!r}: expected FLAVOR=N", 2)
        if name not in flavors:
            known = ", ".join(sorted(flavors))
            raise _fail(f"--capacity {value!r}: no flavor {name!r} in the catalog ({known})", 2)
        if number == UNLIMITED:
            parsed[name] = None
        elif number.isdigit():
            parsed[name] = int(number)
        else:
            raise _fail(f"--capacity {value!r}: N must be a whole number >= 0 or "
                        f"'{UNLIMITED}'", 2)
    return parsed


@pools_app.command("list")
def pools_list(data_dir: DataDir = None, catalog: CatalogFile = None) -> None:
    """List the pools in force: id, name, ready, owner project, capacity, and whether
    each comes from the catalog file or was set with `pools set`."""

    async def work(repo: PoolRepository, loaded: Catalog) -> list[tuple[Pool, str]]:
        managed = {p.id: p for p in await repo.all()}
        rows = []
        for pool_id in sorted(set(loaded.pools) | set(managed)):
            if pool_id in managed:
                source = "managed (replaces the catalog's)" if pool_id in loaded.pools else (
                    "managed")
                rows.append((managed[pool_id], source))
            else:
                rows.append((loaded.pools[pool_id], "catalog"))
        return rows

    for pool, source in _run(data_dir, catalog, work):
        typer.echo(f"{_describe(pool)}\t{source}")


@pools_app.command("set")
def pools_set(
    pool_id: Annotated[str, typer.Argument(metavar="POOL_ID")],
    name: Annotated[str | None, typer.Option(help="Display name (default: the id).")] = None,
    owner_project: Annotated[
        str | None,
        typer.Option(help="The only project that may use the pool; '' for any project."),
    ] = None,
    ready: Annotated[
        bool | None,
        typer.Option("--ready/--not-ready",
                     help="Whether creates may use the pool (not ready: ModelArts.6355)."),
    ] = None,
    capacity: Annotated[
        list[str] | None,
        typer.Option(
            metavar="FLAVOR=N",
            help="Instances of FLAVOR that may hold resources in the pool at once; "
            f"repeat for several flavors; N '{UNLIMITED}' removes the limit.",
        ),
    ] = None,
    data_dir: DataDir = None,
    catalog: CatalogFile = None,
) -> None:
    """Create or change pool POOL_ID. Options not given keep their value (for a pool of
    the catalog file, the file's); servers apply the change within seconds."""
    from dataclasses import replace

    from demanager.domain.catalog import Pool
    from demanager.domain.pools import POOL_ID

    if not POOL_ID.match(pool_id):
        raise _fail(f"pool id {pool_id!r}: use 1-64 letters, digits, '.', '_' or '-', "
                    "starting with a letter or digit", 2)
    if name is not None and not 1 <= len(name) <= 128:
        raise _fail("--name must be 1-128 characters", 2)
    if owner_project is not None and len(owner_project) > 64:
        raise _fail("--owner-project must be at most 64 characters", 2)

    async def work(repo: PoolRepository, loaded: Catalog) -> Pool:
        limits = _capacity(capacity or [], loaded.flavors)
        pool = await repo.get(pool_id) or loaded.pools.get(pool_id) or Pool(pool_id, pool_id)
        merged = {**pool.capacity, **limits}
        pool = replace(
            pool,
            name=pool.name if name is None else name,
            owner_project=pool.owner_project if owner_project is None else owner_project or None,
            ready=pool.ready if ready is None else ready,
            capacity={k: v for k, v in merged.items() if v is not None},
        )
        await repo.put(pool, now_ms=time.time_ns() // 1_000_000)
        return pool

    typer.echo(_describe(_run(data_dir, catalog, work)))


@pools_app.command("delete")
def pools_delete(
    pool_id: Annotated[str, typer.Argument(metavar="POOL_ID")],
    force: Annotated[
        bool, typer.Option("--force", help="Delete even while instances are in the pool.")
    ] = False,
    data_dir: DataDir = None,
    catalog: CatalogFile = None,
) -> None:
    """Delete managed pool POOL_ID; the catalog file's pool of that id, if any, is in
    force again. Instances in a pool that no longer exists keep running, unlimited."""

    async def work(repo: PoolRepository, loaded: Catalog) -> str:
        if await repo.get(pool_id) is None:
            if pool_id in loaded.pools:
                raise _fail(f"pool {pool_id!r} comes from the catalog file: edit the file, "
                            f"or `demanager pools set {pool_id} --not-ready`")
            raise _fail(f"no pool {pool_id!r}")
        # Back to the file's pool, instances keep a pool; otherwise theirs is gone.
        live = 0 if pool_id in loaded.pools else await repo.live_instances(pool_id)
        if live and not force:
            raise _fail(f"pool {pool_id!r} has {live} instance(s); `pools set {pool_id} "
                        "--not-ready` stops new ones, --force deletes it anyway")
        await repo.delete(pool_id)
        return "the catalog's pool is in force again" if pool_id in loaded.pools else "gone"

    typer.echo(f"deleted {pool_id}: {_run(data_dir, catalog, work)}")
