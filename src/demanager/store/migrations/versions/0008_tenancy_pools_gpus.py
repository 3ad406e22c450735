"""What capacity needs beyond counters: per-project settings (instance quota, frozen),
pools managed at run time, whole-GPU assignments, and on each instance the time its
slot was reserved, the GPUs it holds and the length of its last run.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "projects",
        sa.Column("project_id", sa.String(64), primary_key=True),
        sa.Column("instance_quota", sa.Integer, nullable=True),
        sa.Column("frozen", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "pools",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("ready", sa.Boolean, nullable=False),
        sa.Column("owner_project", sa.String(64), nullable=True),
        sa.Column("capacity", sa.JSON, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "gpu_assignments",
        sa.Column("host", sa.String(96), primary_key=True),
        sa.Column("gpu", sa.String(64), primary_key=True),
        sa.Column("instance_id", sa.String(64), nullable=False),
        sa.Column("assigned_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_gpu_assignments_instance", "gpu_assignments", ["instance_id"])
    with op.batch_alter_table("instances") as batch:
        batch.add_column(sa.Column("reserved_at", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("gpus", sa.JSON(none_as_null=True), nullable=True))
        batch.add_column(sa.Column("last_run_ms", sa.BigInteger, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.drop_column("last_run_ms")
        batch.drop_column("gpus")
        batch.drop_column("reserved_at")
    op.drop_index("ix_gpu_assignments_instance", table_name="gpu_assignments")
    op.drop_table("gpu_assignments")
    op.drop_table("pools")
    op.drop_table("projects")
