"""Users, tokens and instances.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "tokens",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("user_id", sa.String(32), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("project_id", sa.String(64), nullable=True),
        sa.Column("expires_at", sa.BigInteger, nullable=True),
        sa.Column("revoked", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "instances",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("live_name", sa.String(64), nullable=True),
        sa.Column("description", sa.String(512), nullable=False),
        sa.Column("profile_id", sa.String(128), nullable=False),
        sa.Column("flavor", sa.String(128), nullable=False),
        sa.Column("storage", sa.JSON, nullable=False),
        sa.Column("extend_storage", sa.JSON, nullable=True),
        sa.Column("auto_stop", sa.JSON, nullable=False),
        sa.Column("annotations", sa.JSON, nullable=False),
        sa.Column("workspace_id", sa.String(64), nullable=False),
        sa.Column("pool_id", sa.String(64), nullable=True),
        sa.Column("ai_project_id", sa.String(128), nullable=False),
        sa.Column("user_id", sa.String(32), nullable=False),
        sa.Column("user_name", sa.String(64), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("desired", sa.String(16), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("running_since", sa.BigInteger, nullable=True),
        sa.Column("stop_at", sa.BigInteger, nullable=True),
        sa.Column("requested_at", sa.BigInteger, nullable=True),
        sa.Column("failed", sa.JSON, nullable=True),
        sa.Column("handle", sa.JSON, nullable=True),
        sa.Column("cleanup_pending", sa.Boolean, nullable=False),
        sa.Column("frozen", sa.Boolean, nullable=False),
        sa.UniqueConstraint("project_id", "live_name", name="uq_instances_live_name"),
    )
    op.create_index("ix_instances_project_status", "instances", ["project_id", "status"])
    op.create_index("ix_instances_status", "instances", ["status"])


def downgrade() -> None:
    op.drop_table("instances")
    op.drop_table("tokens")
    op.drop_table("users")
