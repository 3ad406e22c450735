"""Endpoint: where the proxy reaches a running instance.

The engine fills it when it marks an instance RUNNING (and refills it for rows
that were already running when this revision was applied); it is NULL whenever
the instance is not running.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.add_column(sa.Column("endpoint", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.drop_column("endpoint")
