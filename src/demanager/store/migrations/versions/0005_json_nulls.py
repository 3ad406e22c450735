"""Nullable JSON columns hold SQL NULL, never the JSON text ``null``.

Before this revision the mapping stored Python ``None`` as JSON ``null``, so
``handle IS NOT NULL`` held for every row and each sweep observed every STOPPED
and failed instance. The mapping now writes SQL NULL; this turns the values
already stored into SQL NULL too.

The comparison is on the value's text, which is portable: SQLite stores JSON as
text, and PostgreSQL's ``json`` type casts to text as written (``'null'``).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

COLUMNS = ("extend_storage", "failed", "handle", "endpoint")


def upgrade() -> None:
    instances = sa.table("instances", *(sa.column(name, sa.JSON) for name in COLUMNS))
    for name in COLUMNS:
        column = instances.c[name]
        op.execute(
            instances.update()
            .where(sa.func.trim(sa.cast(column, sa.Text)) == "null")
            .values({name: sa.null()})
        )


def downgrade() -> None:
    # Earlier revisions read SQL NULL as None too: nothing to undo.
    pass
