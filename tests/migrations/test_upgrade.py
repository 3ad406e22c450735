"""Every schema revision upgrades to head with data in it, on SQLite and on PostgreSQL
(when ``DEMANAGER_TEST_POSTGRES_URL`` names a server).

The revisions come from the migrations folder and the rows from the tables each
revision has (reflected, not listed here), so a new migration and its new tables are
covered without touching this file. Each table gets rows that fill every column, some
with NULLs and nested JSON; instances come in several statuses. After ``upgrade`` to
head every row is still there with its values, except where a migration rewrites them
on purpose (``REWRITES``), and the database's schema is the models' schema.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, make_url

from demanager.store.database import alembic_config, upgrade
from demanager.store.tables import Base
from tests.server import TestDatabase

SCRIPT = ScriptDirectory.from_config(alembic_config("sqlite://"))
REVISIONS = [revision.revision for revision in reversed(list(SCRIPT.walk_revisions()))]
HEAD = SCRIPT.get_current_head()
ROWS = 5
STATUSES = ("RUNNING", "STOPPED", "CREATING", "FAILED", "DELETED")
HOLDING = {"RUNNING", "CREATING"}
"""Of ``STATUSES``, those that hold a capacity slot."""
TOKENS_REVOKED = "0003"
"""Tokens of earlier revisions were plain digests: this revision revokes them all."""
JSON_NULLS_CLEARED = "0005"
"""Earlier revisions stored None as the JSON text ``null``; this one makes it SQL NULL."""
CAPACITY_COUNTED = "0007"
"""This revision counts the instances holding capacity into ``quota_usage``."""


def _before(revision: str, other: str) -> bool:
    return REVISIONS.index(revision) < REVISIONS.index(other)


@contextlib.contextmanager
def _database(dialect: str, folder: Path) -> Iterator[tuple[str, str]]:
    """(the async URL migrations run with, the sync URL this test reads and writes with)."""
    if dialect == "sqlite":
        path = folder / "demanager.db"
        yield f"sqlite+aiosqlite:///{path}", f"sqlite:///{path}"
        return
    database = TestDatabase()
    if database.url is None:
        pytest.skip("DEMANAGER_TEST_POSTGRES_URL is not set")
    try:
        yield database.url, make_url(database.url).set(
            drivername="postgresql+psycopg"
        ).render_as_string(hide_password=False)
    finally:
        database.drop()


def _value(column: sa.Column[Any], i: int, filled: dict[str, list[dict[str, Any]]]) -> Any:
    for key in column.foreign_keys:
        return filled[key.column.table.name][i][key.column.name]
    kind = column.type
    if column.nullable and not column.primary_key and i == 0:
        return None
    if isinstance(kind, sa.JSON):
        return {"n": i, "column": column.name, "items": [i, "ü", None], "nested": {"ok": True}}
    if isinstance(kind, sa.Boolean):
        return i % 2 == 1
    if isinstance(kind, sa.BigInteger):
        return 1_700_000_000_000 + i
    if isinstance(kind, sa.Integer):
        return i + 1
    if isinstance(kind, sa.String):
        text = f"{column.name[:10]}-{i}-é"
        return text[: kind.length] if kind.length else text
    raise AssertionError(f"no sample value for {column.table.name}.{column.name}: {kind}")


def _instance(i: int) -> dict[str, Any]:
    """What makes an instance row representative beyond filled columns."""
    status = STATUSES[i % len(STATUSES)]
    running = status == "RUNNING"
    return {
        "status": status,
        "desired": "running" if status in HOLDING else "stopped",
        "flavor": "modelarts.vm.cpu.2u" if i % 2 else "modelarts.vm.gpu.t4",
        "pool_id": None if i % 2 else "pool-a",
        "storage": {"type": "evs", "size": 5 + i},
        "auto_stop": {"enable": bool(i % 2), "duration": 3600},
        "annotations": {"url": f"/notebooks/DE-{i}/" if running else ""},
        "handle": {"pid": 4000 + i, "port": 8000 + i} if running else None,
        "failed": {"code": "ModelArts.6361", "message": "it failed"} if status == "FAILED"
        else None,
        "endpoint": {"host": "127.0.0.1", "port": 8000 + i} if running else None,
        "gpus": ["gpu-0"] if running else None,
    }


OVERRIDES = {"instances": _instance}


def _fill(connection: Connection, revision: str) -> dict[str, list[dict[str, Any]]]:
    metadata = sa.MetaData()
    metadata.reflect(connection)
    filled: dict[str, list[dict[str, Any]]] = {}
    for table in metadata.sorted_tables:
        if table.name == "alembic_version":
            continue
        rows = []
        for i in range(ROWS):
            row = {column.name: _value(column, i, filled) for column in table.columns}
            extra = OVERRIDES.get(table.name)
            if extra:
                row.update({k: v for k, v in extra(i).items() if k in table.columns})
            rows.append(row)
        filled[table.name] = rows
        for column in table.columns:
            if isinstance(column.type, sa.JSON):
                # Write None as the code of that revision did.
                column.type.none_as_null = not _before(revision, JSON_NULLS_CLEARED)
        connection.execute(table.insert(), rows)
    return filled


def _expected(table: str, column: str, value: Any, revision: str) -> Any:
    if table == "tokens" and column == "revoked" and _before(revision, TOKENS_REVOKED):
        return True
    return value


def _check(connection: Connection, revision: str, filled: dict[str, list[dict[str, Any]]]) -> None:
    assert MigrationContext.configure(connection).get_current_revision() == HEAD
    metadata = sa.MetaData()
    metadata.reflect(connection)
    for name, rows in filled.items():
        table = metadata.tables[name]
        keys = [column.name for column in table.primary_key.columns]
        for row in rows:
            found = connection.execute(
                sa.select(table).where(*(table.c[k] == row[k] for k in keys))
            ).mappings().one_or_none()
            assert found is not None, f"{name} row {[row[k] for k in keys]} was lost"
            for key, value in row.items():
                if key in table.c:
                    assert found[key] == _expected(name, key, value, revision), (
                        f"{name}.{key} changed"
                    )
        for column in table.columns:
            if isinstance(column.type, sa.JSON):
                json_nulls = connection.execute(
                    sa.select(sa.func.count()).select_from(table)
                    .where(sa.func.trim(sa.cast(column, sa.Text)) == "null")
                ).scalar_one()
                assert json_nulls == 0, f"{name}.{column.name} holds JSON null, not SQL NULL"
    if _before(revision, CAPACITY_COUNTED):
        usage = metadata.tables["quota_usage"]
        counted = dict(connection.execute(
            sa.select(usage.c.scope, usage.c.used).where(usage.c.scope.like("capacity:%"))
        ).all())
        holding: dict[str, int] = {}
        for row in filled["instances"]:
            if row["status"] in HOLDING:
                scope = f"capacity:{row.get('pool_id') or ''}:{row['flavor']}"
                holding[scope] = holding.get(scope, 0) + 1
        assert counted == holding
    differences = compare_metadata(
        MigrationContext.configure(connection, opts={"compare_type": True}), Base.metadata
    )
    assert differences == [], "the migrated schema differs from the models"


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
@pytest.mark.parametrize("revision", REVISIONS)
def test_each_revision_upgrades_to_head_with_its_data(
    revision: str, dialect: str, tmp_path: Path
) -> None:
    with _database(dialect, tmp_path) as (url, sync_url):
        upgrade(url, revision)
        engine = sa.create_engine(sync_url)
        try:
            with engine.begin() as connection:
                filled = _fill(connection, revision)
            upgrade(url)
            with engine.connect() as connection:
                _check(connection, revision, filled)
        finally:
            engine.dispose()


def test_the_revisions_are_one_line_from_the_first_to_head() -> None:
    """One head and no branches: ``upgrade`` from any revision reaches every later one."""
    assert SCRIPT.get_heads() == [HEAD]
    assert REVISIONS[0] == "0001" and REVISIONS[-1] == HEAD
