"""Wiring: settings in, a running store + backend + reconciler + service out.

Used by ``create_app`` and by the CLI's server-side commands; nothing here runs
at import time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from importlib.metadata import entry_points
from pathlib import Path

from pydantic import ValidationError
from sqlalchemy import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from demanager.backends.base import Backend, BackendContext, Options, recipe_of
from demanager.backends.inventory import gpus_only_inventory, process_inventory
from demanager.backends.node import replica_name, this_node
from demanager.backends.objectmounts import OBJECTS_DIR, HostMounts
from demanager.catalog import load_catalog
from demanager.domain.catalog import Catalog, CatalogError
from demanager.domain.hostfit import Inventory
from demanager.domain.policy import Policy
from demanager.domain.pools import PoolDirectory
from demanager.engine.activity import ActivityProbe
from demanager.engine.buckets import BucketCheck
from demanager.engine.clock import Clock, SystemClock
from demanager.engine.events import EventService
from demanager.engine.health import Readiness
from demanager.engine.metrics import Metrics, StoreGauges
from demanager.engine.pools import PoolRefresher
from demanager.engine.reconciler import Reconciler
from demanager.engine.service import InstanceService
from demanager.engine.views import InstanceViews
from demanager.engine.webhooks import Webhook
from demanager.errors import PermanentBackendError
from demanager.identity.secrets import load_server_key
from demanager.identity.service import OPERATOR_NAME, IdentityService
from demanager.identity.throttle import LoginThrottle
from demanager.objectstore.access import ObjectAccess
from demanager.settings import Settings, backend_section
from demanager.store.database import (
    current_revisions,
    head_revision,
    make_engine,
    make_sessionmaker,
    upgrade_in_child,
)
from demanager.store.events import EventRepository
from demanager.store.identity import IdentityRepository
from demanager.store.instances import InstanceRepository
from demanager.store.leases import LeaseRepository
from demanager.store.objectaccess import ObjectAccessRepository
from demanager.store.pools import PoolRepository
from demanager.store.projects import ProjectRepository

log = logging.getLogger(__name__)

async def upgrade_database(settings: Settings) -> None:
    """Bring the store's schema to the newest revision; a database already there is only
    read, and one behind is migrated by a child interpreter (``store/database.py``)."""
    engine = make_engine(settings.sqlalchemy_url)
    try:
        current = await current_revisions(engine)
    finally:
        await engine.dispose()
    if current != {head_revision()}:
        await asyncio.to_thread(upgrade_in_child, settings.sqlalchemy_url)


class UnknownBackend(ValueError):
    pass


def policy_of(settings: Settings) -> Policy:
    """The lifecycle policy the settings' ``policy`` section describes."""
    options = settings.policy
    return Policy(
        idle_timeout_ms=options.idle_timeout_seconds * 1000,
        max_lifetime_ms=options.max_lifetime_seconds * 1000,
        warn_before_ms=options.warn_before_seconds * 1000,
        max_extension_ms=options.max_extension_seconds * 1000,
        connected_is_active=options.idle_connected_is_active,
    )


def webhook_of(settings: Settings) -> Webhook | None:
    options = settings.policy
    if not options.webhook_url:
        return None
    secret = options.webhook_secret.get_secret_value() if options.webhook_secret else None
    return Webhook(options.webhook_url, secret)


def backend_class(name: str) -> type[Backend]:
    """The backend registered as ``name`` in the ``demanager.backends`` entry points."""
    found = entry_points(group="demanager.backends", name=name)
    if not found:
        names = sorted(ep.name for ep in entry_points(group="demanager.backends"))
        raise UnknownBackend(f"unknown backend {name!r}; installed: {', '.join(names)}")
    cls: type[Backend] = next(iter(found)).load()
    return cls


def host_inventory(settings: Settings, backend_name: str) -> Inventory | None:
    """The host whose CPUs, memory and GPUs the store counts for the chosen backend.

    The process backend runs every notebook on this machine: all three, declared or
    detected. Docker's daemon limits CPUs and memory itself and may be another machine,
    so only GPUs it is given as a list are assigned (and the fake backend, for tests,
    does the same). Any other backend (Kubernetes) leaves placement to its scheduler.
    """
    if backend_name == "process":
        options = settings.process
        return process_inventory(
            host=this_node(settings.node_id),
            cpus=options.cpus,
            memory_bytes=options.memory,
            gpus=settings.gpu_list,
            cpu_overcommit=options.cpu_overcommit,
        )
    if backend_name == "docker":
        daemon = settings.docker.host or os.environ.get("DOCKER_HOST") or "local"
        return gpus_only_inventory(host=f"docker:{daemon}"[:96], gpus=settings.gpu_list)
    if backend_name == "fake":
        return gpus_only_inventory(host="fake", gpus=settings.gpu_list)
    return None


def backend_context(
    settings: Settings, object_access: ObjectAccess | None = None
) -> BackendContext:
    return BackendContext(
        data_dir=settings.data_dir,
        node_id=settings.node_id,
        object_storage_root=settings.object_storage_root,
        instance_label=settings.instance_label,
        object_access=object_access,
        host_mounts=None
        if object_access is None
        else HostMounts(
            settings.data_dir / OBJECTS_DIR, object_access, interval=settings.s3.sync_seconds
        ),
    )


def object_access(
    settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> ObjectAccess | None:
    """How to reach the projects' buckets, when S3 is configured: the deployment's
    section with the keys and grants the operator keeps in the database."""
    if not settings.s3.configured:
        return None
    key = load_server_key(settings.data_dir, settings.secret_key)
    return ObjectAccess(settings.s3, ObjectAccessRepository(sessions, key))


def check_backend_settings(
    cls: type[Backend], settings: Settings, catalog: Catalog | None = None
) -> Options:
    """The backend's options from its settings section; with ``catalog``, also check that
    the backend can read each profile's ``launch`` section for it."""
    try:
        options = cls.options_type.model_validate(backend_section(settings, settings.backend))
    except ValidationError as exc:
        raise UnknownBackend(
            f"settings of the {settings.backend} backend (DEMANAGER_"
            f"{settings.backend.upper()}__…): {exc}"
        ) from exc
    if catalog is not None:
        for profile in catalog.profiles.values():
            try:
                recipe_of(cls.recipe_type, settings.backend, profile)
            except PermanentBackendError as exc:
                raise CatalogError(str(exc)) from exc
    return options


def load_backend(
    settings: Settings, catalog: Catalog | None = None, context: BackendContext | None = None
) -> Backend:
    """Build the chosen backend from its own settings section (see
    ``check_backend_settings``)."""
    cls = backend_class(settings.backend)
    return cls(
        check_backend_settings(cls, settings, catalog), context or backend_context(settings)
    )


def data_dir_mode() -> int:
    """0700; as root 0711, traversable but not listable, because instances then run under
    uids of their own that must reach their volumes below it, while everything else in
    it (the database, the token, runtime/) is closed by its own mode."""
    return 0o711 if os.geteuid() == 0 else 0o700


def prepare_data_dir(settings: Settings) -> None:
    """Create the data dir with its modes, and close the secrets in it (0600)."""
    mode = data_dir_mode()
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=mode)
    if settings.data_dir.stat().st_uid == os.geteuid():
        settings.data_dir.chmod(mode)
    for secret in (settings.data_dir / "operator-token", *_sqlite_files(settings)):
        # SQLite's journals come and go with each transaction of a concurrent CLI call.
        with contextlib.suppress(FileNotFoundError):
            info = secret.stat()
            if info.st_mode & 0o077 and info.st_uid == os.geteuid():
                secret.chmod(0o600)


def _sqlite_files(settings: Settings) -> list[Path]:
    """The SQLite database (created empty 0600 now: SQLite gives its journals the same mode)."""
    url = make_url(settings.sqlalchemy_url)
    if not url.drivername.startswith("sqlite") or not url.database or url.database == ":memory:":
        return []
    database = Path(url.database)
    if not database.exists():
        database.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(database, os.O_WRONLY | os.O_CREAT, 0o600))
    suffixes = ("-wal", "-shm", "-journal")
    return [database, *(database.with_name(database.name + suffix) for suffix in suffixes)]


def operator_token(settings: Settings) -> str:
    """The bootstrap token: from the settings, else kept (0600) in the data dir."""
    if settings.bootstrap_token:
        return settings.bootstrap_token
    path = settings.data_dir / "operator-token"
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    token = "dmo_" + secrets.token_urlsafe(32)
    prepare_data_dir(settings)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(token + "\n")
    return token


IDENTITY_MARKER = "identity.changed"
"""The data dir's file that tells the server an operator command changed a token, user
or membership (``identity/cache.py``)."""


async def build_identity(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], now_ms: Callable[[], int]
) -> IdentityService:
    """The identity service over the store, with the server key and the operator: the
    server and the operator commands alike."""
    users = IdentityRepository(sessions)
    return IdentityService(
        repository=users,
        key=load_server_key(settings.data_dir, settings.secret_key),
        now_ms=now_ms,
        operator=await users.ensure_user(OPERATOR_NAME, now_ms=now_ms()),
        operator_token=operator_token(settings),
        cache_seconds=settings.auth_cache_seconds,
        change_marker=settings.data_dir / IDENTITY_MARKER,
    )


@dataclass
class Runtime:
    settings: Settings
    db: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    instances: InstanceRepository
    identity: IdentityService
    catalog: Catalog
    backend: Backend
    clock: Clock
    reconciler: Reconciler
    service: InstanceService
    views: InstanceViews
    login_throttle: LoginThrottle
    """Failed password sign-ins, per user and per address: one count for every way in
    (Keystone's ``/v3/auth/tokens`` and the notebook sign-in page)."""
    events: EventService
    """The event log: pages and live streams of it, and its purge."""
    pools: PoolRefresher
    """Keeps ``catalog.pools`` current with the pools managed at run time."""
    metrics: Metrics
    """The instruments the engine, the proxy and the API count into."""
    gauges: StoreGauges
    """Instances and capacity as the store has them, read at scrape time."""
    readiness: Readiness
    """``/readyz``'s checks: the database, its migrations, the backend."""
    host_mounts: HostMounts | None = None
    """Syncs the buckets of this host's notebooks (S3 configured), in the background."""

    @classmethod
    async def build(
        cls, settings: Settings, *, clock: Clock | None = None, backend: Backend | None = None
    ) -> Runtime:
        clock = clock or SystemClock()
        prepare_data_dir(settings)
        loaded = load_catalog(settings.catalog_file)
        db = make_engine(settings.sqlalchemy_url)
        sessions = make_sessionmaker(db)
        access = object_access(settings, sessions)
        context = backend_context(settings, access)
        backend = backend or load_backend(settings, loaded, context)
        # Every part reads pools through the catalog; the directory makes them live.
        directory = PoolDirectory(loaded.pools)
        catalog = replace(loaded, pools=directory)
        inventory = host_inventory(settings, backend.name)
        if inventory is not None:
            log.info("host %s: %s", inventory.host, inventory.limits())
        instances = InstanceRepository(sessions, catalog, inventory)
        await instances.recount_host()
        identity = await build_identity(settings, sessions, clock.now_ms)
        metrics = Metrics(backend.name)
        gauges = StoreGauges(db, catalog, backend.name)
        metrics.registry.register(gauges)
        events = EventService(
            repository=EventRepository(sessions),
            instances=instances,
            clock=clock,
            retention_seconds=settings.event_retention_seconds,
        )
        policy = policy_of(settings)
        activity = (
            ActivityProbe(int(settings.policy.activity_probe_seconds * 1000))
            if policy.judges_idle else None
        )
        webhook = webhook_of(settings)
        reconciler = Reconciler(
            repository=instances,
            leases=LeaseRepository(sessions),
            owner=replica_name(this_node(settings.node_id), secrets.token_hex(4)),
            host_node=this_node(settings.node_id),
            lease_seconds=settings.lease_seconds,
            backend=backend,
            catalog=catalog,
            clock=clock,
            start_timeout=settings.start_timeout_seconds,
            health_failures=settings.health_failures,
            sweep_interval=settings.reconcile_interval_seconds,
            concurrency=settings.workers,
            tombstone_retention=settings.tombstone_retention_seconds,
            inventory=inventory,
            reservation_seconds=settings.reservation_seconds,
            metrics=metrics,
            purge_events=events.purge,
            policy=policy,
            activity=activity,
            webhook=webhook,
        )
        instances.on_slot_freed(reconciler.slot_freed)
        service = InstanceService(
            repository=instances,
            projects=ProjectRepository(sessions),
            catalog=catalog,
            clock=clock,
            notify=reconciler.notify,
            instance_quota=settings.instance_quota,
            min_auto_stop=settings.min_auto_stop_seconds,
            policy=policy,
            object_storage=settings.object_storage,
            check_buckets=BucketCheck(access) if access is not None else None,
        )
        return cls(
            settings=settings,
            db=db,
            sessions=sessions,
            instances=instances,
            identity=identity,
            catalog=catalog,
            backend=backend,
            clock=clock,
            reconciler=reconciler,
            service=service,
            views=InstanceViews(
                service=service,
                repository=instances,
                catalog=catalog,
                identity=identity,
                clock=clock,
                target_domain=settings.target_domain,
                link_ttl_seconds=settings.link_ttl_seconds,
                session_ttl_seconds=settings.session_ttl_seconds,
            ),
            login_throttle=LoginThrottle(
                per_user=settings.login_failures_per_user,
                per_address=settings.login_failures_per_address,
                window_seconds=settings.login_failure_window_seconds,
                now=time.monotonic,
            ),
            pools=PoolRefresher(
                repository=PoolRepository(sessions),
                directory=directory,
                flavors=frozenset(catalog.flavors),
                interval=settings.pools_refresh_seconds,
            ),
            events=events,
            host_mounts=context.host_mounts,
            metrics=metrics,
            gauges=gauges,
            readiness=Readiness(db, backend),
        )

    async def close(self) -> None:
        await self.pools.stop()
        await self.reconciler.stop(grace=self.settings.shutdown_grace_seconds)
        await self.reconciler.close_policy()
        await self.events.tail.close()
        if self.host_mounts is not None:
            await self.host_mounts.stop()
        await self.backend.close()
        await self.db.dispose()
