"""Identity: passwords, project memberships with roles, and quota counters.

Tokens are now stored as keyed digests (HMAC-SHA256 under the server key); the
plain SHA-256 digests of earlier tokens can never match, so those tokens are
revoked here and must be issued again.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("password_hash", sa.String(256), nullable=True))
    op.create_table(
        "memberships",
        sa.Column(
            "user_id", sa.String(32), sa.ForeignKey("users.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("project_id", sa.String(64), primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
    )
    # Whoever held a token for a project was, in effect, a member of it.
    op.execute(
        "INSERT INTO memberships (user_id, project_id, role) "
        "SELECT DISTINCT user_id, project_id, 'member' FROM tokens WHERE project_id IS NOT NULL"
    )
    op.execute("UPDATE tokens SET revoked = true")
    op.create_table(
        "quota_usage",
        sa.Column("scope", sa.String(256), primary_key=True),
        sa.Column("used", sa.Integer, nullable=False),
    )
    op.execute(
        "INSERT INTO quota_usage (scope, used) "
        "SELECT 'project:' || project_id, count(*) FROM instances "
        "WHERE status != 'DELETED' GROUP BY project_id"
    )
    op.execute(
        "INSERT INTO quota_usage (scope, used) "
        "SELECT 'flavor:' || project_id || ':' || flavor, count(*) FROM instances "
        "WHERE status != 'DELETED' GROUP BY project_id, flavor"
    )


def downgrade() -> None:
    op.drop_table("quota_usage")
    op.drop_table("memberships")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("password_hash")
