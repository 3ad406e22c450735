"""A list ordered by the database is the list ordered in code, page for page.

The database orders a page itself when it compares names by code point (SQLite always,
PostgreSQL with the C collation); otherwise every match's keys are sorted in code.
Both paths run here over names of every character class a name may hold (live names are
unique in a project), with ties on creation time, for every sort, direction, filter,
offset and limit. Runs on
SQLite, and on PostgreSQL when ``DEMANAGER_TEST_POSTGRES_URL`` is set.
"""

from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from demanager.domain.instance import InstanceId, UserId
from demanager.domain.lifecycle import InstanceStatus as S
from demanager.domain.validation import SORT_FIELDS, ListQuery
from demanager.store.database import make_sessionmaker
from demanager.store.instances import InstanceRepository
from tests import server
from tests.unit.stored import CATALOG, USER, instance

NAMES = ["a", "B", "b", "Z", "A", "_x", "-x", "0", "9", "a-b", "a_b", "ab", "aB", "a0", "nb"]
USERS = [USER, UserId("v" * 32)]


@pytest.fixture
async def repo(tmp_path: Path) -> AsyncIterator[InstanceRepository]:
    async with server.migrated_database(tmp_path) as (_, engine):
        yield await _filled(InstanceRepository(make_sessionmaker(engine), CATALOG))


async def _filled(repo: InstanceRepository) -> InstanceRepository:
    chosen = random.Random(7)
    names = [a + b for a in NAMES for b in NAMES]
    chosen.shuffle(names)
    for n, name in enumerate(names[:90]):
        user = chosen.choice(USERS)
        created = chosen.choice([1_000, 2_000, 3_000 + n])  # ties on time
        await repo.add(instance(
            n, id=InstanceId(f"DE-{chosen.getrandbits(64):016x}"), name=name,
            user_id=user, user_name=user[:1],
            status=chosen.choice([S.RUNNING, S.STOPPED, S.CREATING]),
            created_at=created, updated_at=created, requested_at=created,
        ), project_quota=10**6, flavor_quota=None)
    return repo


async def _both(repo: InstanceRepository, query: ListQuery) -> tuple[object, object]:
    repo.database_orders = True
    by_database = await repo.list("p", query, USERS[0])
    repo.database_orders = False
    in_code = await repo.list("p", query, USERS[0])
    return (by_database[0], [i.id for i in by_database[1]], by_database[2]), (
        in_code[0], [i.id for i in in_code[1]], in_code[2])


async def test_the_database_orders_a_page_as_the_code_does(repo: InstanceRepository) -> None:
    await repo.list("p", ListQuery(), USERS[0])
    if not repo.database_orders:
        pytest.skip("this database's collation is not code-point order: lists sort in code")
    checked = 0
    for sortby in SORT_FIELDS:
        for descending in (False, True):
            for status in (None, S.RUNNING):
                for show_self in (True, False):
                    for offset, limit in ((0, 0), (0, 10), (7, 25), (80, 30), (200, 5)):
                        query = ListQuery(status=status, sortby=sortby, descending=descending,
                                          offset=offset, limit=limit, show_self=show_self)
                        by_database, in_code = await _both(repo, query)
                        assert by_database == in_code, query
                        checked += 1
    assert checked == len(SORT_FIELDS) * 2 * 2 * 2 * 5


async def test_sqlite_is_asked_and_orders_by_code_point(repo: InstanceRepository) -> None:
    await repo.list("p", ListQuery(limit=5), USERS[0])
    if os.environ.get("DEMANAGER_TEST_POSTGRES_URL"):
        pytest.skip("asks SQLite")
    assert repo.database_orders is True
