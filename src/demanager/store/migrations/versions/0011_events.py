"""The event log: one row per lifecycle event of an instance.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "events",
        # SQLite only autoincrements an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT one.
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("instance_id", sa.String(64), nullable=False),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("at_ms", sa.BigInteger, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(96), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("code", sa.String(32), nullable=True),
        sa.Column("detail", sa.JSON(none_as_null=True), nullable=True),
    )
    op.create_index("ix_events_instance", "events", ["instance_id", "id"])
    op.create_index("ix_events_project", "events", ["project_id", "id"])
    op.create_index("ix_events_at", "events", ["at_ms"])


def downgrade() -> None:
    op.drop_index("ix_events_at", table_name="events")
    op.drop_index("ix_events_project", table_name="events")
    op.drop_index("ix_events_instance", table_name="events")
    op.drop_table("events")
