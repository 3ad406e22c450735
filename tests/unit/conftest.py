"""Fixtures the unit tests share."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from demanager.store.database import make_engine, upgrade


@pytest.fixture
async def sqlite_engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """An async engine on a SQLite file migrated to the newest schema."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'demanager.db'}"
    await asyncio.to_thread(upgrade, url)
    built = make_engine(url)
    yield built
    await built.dispose()
