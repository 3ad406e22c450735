"""An index for the queue estimates' history: the latest finished runs of one flavor,
newest first, read on every response that shows a queue.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_instances_flavor_updated", "instances", ["flavor", "updated_at"])


def downgrade() -> None:
    op.drop_index("ix_instances_flavor_updated", table_name="instances")
