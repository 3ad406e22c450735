"""The server's start reads the schema's revision and migrates, in a child interpreter,
only a database that is behind; what a failed migration says reaches the operator."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import text

from demanager.engine import runtime
from demanager.settings import Settings
from demanager.store.database import (
    MigrationFailed,
    alembic_config,
    current_revisions,
    head_revision,
    make_engine,
)


def test_the_newest_file_is_alembics_head() -> None:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    assert script.get_heads() == [head_revision()]


async def _revisions(url: str) -> frozenset[str]:
    engine = make_engine(url)
    try:
        return await current_revisions(engine)
    finally:
        await engine.dispose()


async def test_a_new_database_is_migrated_and_one_at_head_only_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(data_dir=tmp_path, backend="fake", bootstrap_token="t")
    url = settings.sqlalchemy_url
    assert await _revisions(url) == frozenset()
    caplog.set_level(logging.INFO, logger="demanager.store.database")

    await runtime.upgrade_database(settings)
    assert await _revisions(url) == {head_revision()}
    assert any("Running upgrade" in r.getMessage() for r in caplog.records), "child's log"

    def no_child(url: str) -> None:
        raise AssertionError("a database at the head was migrated again")

    monkeypatch.setattr(runtime, "upgrade_in_child", no_child)
    await runtime.upgrade_database(settings)


async def test_a_database_behind_is_brought_to_the_head(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, backend="fake", bootstrap_token="t")
    url = settings.sqlalchemy_url
    await runtime.upgrade_database(settings)
    await asyncio.to_thread(command.downgrade, alembic_config(url), "-1")
    assert await _revisions(url) != {head_revision()}
    await runtime.upgrade_database(settings)
    assert await _revisions(url) == {head_revision()}


async def test_a_database_from_a_newer_release_stops_the_start_with_alembics_reason(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path, backend="fake", bootstrap_token="t")
    url = settings.sqlalchemy_url
    await runtime.upgrade_database(settings)
    engine = make_engine(url)
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    await engine.dispose()
    with pytest.raises(MigrationFailed, match="9999"):
        await runtime.upgrade_database(settings)
