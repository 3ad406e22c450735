"""Table definitions. Portable SQL only: everything here runs on SQLite and PostgreSQL.

Instants are stored as integer milliseconds since the epoch (UTC), the unit the
wire uses, so no time-zone conversion can creep in.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NULLABLE_JSON = JSON(none_as_null=True)
"""For nullable JSON columns: Python ``None`` is SQL NULL, not the JSON text ``null``
(SQLAlchemy's default), so ``IS NULL`` means what it says."""


class Base(DeclarativeBase):
    pass


class UserRow(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    password_hash: Mapped[str | None] = mapped_column(String(256), nullable=True)
    """argon2id; NULL for a token-only user, who cannot sign in with a password."""


class MembershipRow(Base):
    """A user's role in a project: ``admin`` (every instance) or ``member`` (their own)."""

    __tablename__ = "memberships"

    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    project_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))


class QuotaUsageRow(Base):
    """Live instances per scope (``project:{id}``, ``flavor:{id}:{flavor}``), kept in step
    with the instances table so a quota check is one conditional UPDATE: the row lock
    makes it hold across API replicas on PostgreSQL."""

    __tablename__ = "quota_usage"

    scope: Mapped[str] = mapped_column(String(256), primary_key=True)
    used: Mapped[int] = mapped_column(Integer, default=0)


class TokenRow(Base):
    __tablename__ = "tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    """HMAC-SHA256 of the token under the server key; the token itself is never stored."""
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    project_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    expires_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[int] = mapped_column(BigInteger)


class InstanceRow(Base):
    __tablename__ = "instances"
    __table_args__ = (
        # live_name is the name while the instance lives and NULL once deleted; NULLs
        # never collide, so this is "unique among live instances" on both databases.
        UniqueConstraint("project_id", "live_name", name="uq_instances_live_name"),
        Index("ix_instances_project_status", "project_id", "status"),
        Index("ix_instances_status", "status"),
        # The queue estimates' history: a flavor's latest finished runs (0009).
        Index("ix_instances_flavor_updated", "flavor", "updated_at"),
        # A caller's own instances: the counts per flavor of a GET and a list, and a
        # page by name read in order (0013).
        Index("ix_instances_owner_flavor", "project_id", "user_id", "flavor", "status"),
        Index("ix_instances_owner_page", "project_id", "user_id", "workspace_id", "name",
              "created_at", "id", "status"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(64))
    live_name: Mapped[str | None] = mapped_column(String(64), nullable=True)
    description: Mapped[str] = mapped_column(String(512), default="")
    profile_id: Mapped[str] = mapped_column(String(128))
    flavor: Mapped[str] = mapped_column(String(128))
    storage: Mapped[dict[str, Any]] = mapped_column(JSON)
    extend_storage: Mapped[list[dict[str, Any]] | None] = mapped_column(
        NULLABLE_JSON, nullable=True
    )
    auto_stop: Mapped[dict[str, Any]] = mapped_column(JSON)
    annotations: Mapped[dict[str, str]] = mapped_column(JSON)
    workspace_id: Mapped[str] = mapped_column(String(64))
    pool_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    ai_project_id: Mapped[str] = mapped_column(String(128))
    user_id: Mapped[str] = mapped_column(String(32))
    user_name: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(32))
    desired: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)
    version: Mapped[int] = mapped_column(Integer, default=0)
    running_since: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    stop_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    requested_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    failed: Mapped[dict[str, Any] | None] = mapped_column(NULLABLE_JSON, nullable=True)
    handle: Mapped[dict[str, Any] | None] = mapped_column(NULLABLE_JSON, nullable=True)
    endpoint: Mapped[dict[str, Any] | None] = mapped_column(NULLABLE_JSON, nullable=True)
    """Host, port, base path and upstream headers of the workload; NULL unless RUNNING."""
    cleanup_pending: Mapped[bool] = mapped_column(Boolean, default=False)
    frozen: Mapped[bool] = mapped_column(Boolean, default=False)
    lease_owner: Mapped[str | None] = mapped_column(String(96), nullable=True)
    """The engine driving the instance right now; see ``store/leases.py``."""
    lease_until: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    reserved_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    """When the engine reserved a slot for the queued instance
    (``spec.resource_reserved_timestamp``); NULL unless READY_TO_START or after."""
    gpus: Mapped[list[str] | None] = mapped_column(NULLABLE_JSON, nullable=True)
    """The GPUs assigned to the instance while it holds resources (``gpu_assignments``)."""
    last_run_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    """How long its last run lasted, RUNNING to stopped: the queue estimates' history."""
    extended_ms: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    """How much the current run was extended (the lifecycle policy's extend route)."""
    warned_for: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    """The planned stop the current run was last warned of (ms)."""


class ProjectRow(Base):
    """What an operator set for one project; a project without a row has the defaults."""

    __tablename__ = "projects"

    project_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    instance_quota: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """Live instances the project may have; NULL = the server's ``instance_quota``."""
    frozen: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[int] = mapped_column(BigInteger)


class PoolRow(Base):
    """A dedicated pool managed at run time (``demanager pools``); it replaces the
    catalog's pool of the same id."""

    __tablename__ = "pools"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    type: Mapped[str] = mapped_column(String(32))
    ready: Mapped[bool] = mapped_column(Boolean)
    owner_project: Mapped[str | None] = mapped_column(String(64), nullable=True)
    capacity: Mapped[dict[str, int]] = mapped_column(JSON)
    updated_at: Mapped[int] = mapped_column(BigInteger)


class GpuAssignmentRow(Base):
    """One whole GPU of one host given to one instance. The primary key is what keeps
    two instances from ever sharing a GPU, across replicas."""

    __tablename__ = "gpu_assignments"
    __table_args__ = (Index("ix_gpu_assignments_instance", "instance_id"),)

    host: Mapped[str] = mapped_column(String(96), primary_key=True)
    gpu: Mapped[str] = mapped_column(String(64), primary_key=True)
    instance_id: Mapped[str] = mapped_column(String(64))
    assigned_at: Mapped[int] = mapped_column(BigInteger)


class ReplicaRow(Base):
    """A running engine (``demanager serve``): its heartbeat tells the others it is alive,
    and its node which workloads only it may touch."""

    __tablename__ = "engine_replicas"

    owner: Mapped[str] = mapped_column(String(96), primary_key=True)
    """The lease owner name the replica writes into the instances it drives."""
    node: Mapped[str] = mapped_column(String(96))
    started_at: Mapped[int] = mapped_column(BigInteger)
    seen_at: Mapped[int] = mapped_column(BigInteger)


class ProjectStorageKeysRow(Base):
    """A project's own object-storage access key (``demanager storage keys``)."""

    __tablename__ = "project_storage_keys"

    project_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    access_key_id: Mapped[str] = mapped_column(String(128))
    secret_ciphertext: Mapped[str] = mapped_column(Text)
    """The secret key, encrypted under a key derived from the server key
    (``store/objectaccess.py``); never the secret itself."""
    updated_at: Mapped[int] = mapped_column(BigInteger)


class BucketGrantRow(Base):
    """A bucket the deployment's keys serve for one project (``demanager storage grant``).
    The bucket is the primary key: it is granted to one project at most."""

    __tablename__ = "bucket_grants"
    __table_args__ = (Index("ix_bucket_grants_project", "project_id"),)

    bucket: Mapped[str] = mapped_column(String(63), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(64))
    granted_at: Mapped[int] = mapped_column(BigInteger)


class EventRow(Base):
    """One lifecycle event of an instance (``domain/events.py``). The id grows with every
    append, so it orders events and lets a stream resume after the last one it sent."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_instance", "instance_id", "id"),
        Index("ix_events_project", "project_id", "id"),
        Index("ix_events_at", "at_ms"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    instance_id: Mapped[str] = mapped_column(String(64))
    project_id: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str] = mapped_column(String(64))
    """The instance's owner: a member sees the events of their own instances only."""
    at_ms: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(96))
    message: Mapped[str] = mapped_column(Text)
    code: Mapped[str | None] = mapped_column(String(32), nullable=True)
    detail: Mapped[dict[str, Any] | None] = mapped_column(NULLABLE_JSON, nullable=True)
