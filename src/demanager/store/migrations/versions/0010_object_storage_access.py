"""Object storage per project: a project's own access key, its secret encrypted at rest,
and the buckets the deployment's keys serve for each project, one project per bucket.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "project_storage_keys",
        sa.Column("project_id", sa.String(64), primary_key=True),
        sa.Column("access_key_id", sa.String(128), nullable=False),
        sa.Column("secret_ciphertext", sa.Text, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "bucket_grants",
        sa.Column("bucket", sa.String(63), primary_key=True),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("granted_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_bucket_grants_project", "bucket_grants", ["project_id"])


def downgrade() -> None:
    op.drop_index("ix_bucket_grants_project", table_name="bucket_grants")
    op.drop_table("bucket_grants")
    op.drop_table("project_storage_keys")
