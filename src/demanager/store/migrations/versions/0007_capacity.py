"""Capacity counters: one ``quota_usage`` row per (pool, flavor) scope, counting the
instances that hold resources there, so that taking a slot is one conditional UPDATE.

The rows are initialised from the instances as they are. The statuses and the scope's
spelling are copied here (``HOLDS_RESOURCES``, ``store.instances.capacity_scope``) so
that this revision means the same thing whatever later code says.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_HOLDING = (
    "CREATING",
    "READY_TO_START",
    "STARTING",
    "RESTARTING",
    "RUNNING",
    "UNAVAILABLE",
    "STOPPING",
)

_instances = sa.table(
    "instances",
    sa.column("pool_id", sa.String),
    sa.column("flavor", sa.String),
    sa.column("status", sa.String),
)
_usage = sa.table("quota_usage", sa.column("scope", sa.String), sa.column("used", sa.Integer))


def upgrade() -> None:
    bind = op.get_bind()
    bind.execute(sa.delete(_usage).where(_usage.c.scope.like("capacity:%")))
    counts = bind.execute(
        sa.select(_instances.c.pool_id, _instances.c.flavor, sa.func.count())
        .where(_instances.c.status.in_(_HOLDING))
        .group_by(_instances.c.pool_id, _instances.c.flavor)
    ).all()
    rows = [
        {"scope": f"capacity:{pool or ''}:{flavor}", "used": int(n)} for pool, flavor, n in counts
    ]
    if rows:
        bind.execute(sa.insert(_usage), rows)


def downgrade() -> None:
    op.get_bind().execute(sa.delete(_usage).where(_usage.c.scope.like("capacity:%")))
