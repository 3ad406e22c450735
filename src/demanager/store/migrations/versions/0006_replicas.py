"""Engine replicas: one row per running engine, with its node and heartbeat, so
replicas sharing a database know which of them are alive and where.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "engine_replicas",
        sa.Column("owner", sa.String(96), primary_key=True),
        sa.Column("node", sa.String(96), nullable=False),
        sa.Column("started_at", sa.BigInteger, nullable=False),
        sa.Column("seen_at", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("engine_replicas")
