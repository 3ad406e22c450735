"""The lifecycle policy's record of a run: how much it was extended, and which planned
stop it was last warned of.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.add_column(
            sa.Column("extended_ms", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("warned_for", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.drop_column("warned_for")
        batch.drop_column("extended_ms")
