"""Projects' own object-storage keys and bucket grants, in the database.

Round trips, the refusals of ``grant``, the secret never stored or logged in plain
text, keys a changed server key cannot read, racing grants of one bucket, and migration
0010 both ways. Runs on SQLite, and on PostgreSQL when ``DEMANAGER_TEST_POSTGRES_URL``
is set.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from alembic import command
from pydantic import SecretStr
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from demanager import errors
from demanager.objectstore.access import BucketLookup, ObjectAccess
from demanager.objectstore.options import S3Options
from demanager.store.database import alembic_config, make_engine, make_sessionmaker, upgrade
from demanager.store.objectaccess import (
    AccessListing,
    BucketGrant,
    ObjectAccessRepository,
    StoredKeys,
)
from tests import server

KEY = b"k" * 32
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY"
DEPLOYMENT = S3Options(
    endpoint_url="http://127.0.0.1:9", access_key_id="DEPLOYMENTAK",
    secret_access_key=SecretStr("deployment-secret"),
)


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[tuple[str, AsyncEngine]]:
    async with server.migrated_database(tmp_path) as built:
        yield built


@pytest.fixture
def repo(database: tuple[str, AsyncEngine]) -> ObjectAccessRepository:
    return ObjectAccessRepository(make_sessionmaker(database[1]), KEY)


async def test_keys_and_grants_round_trip(repo: ObjectAccessRepository) -> None:
    assert await repo.list() == AccessListing([], [])
    assert await repo.lookup("p", "data") == BucketLookup(None, None)

    await repo.set_keys("p", "AK1", SecretStr("first"), now_ms=1)
    await repo.set_keys("p", "AK2", SecretStr(SECRET), now_ms=2)
    found = await repo.lookup("p", "data")
    assert found.granted_to is None and found.project_keys is not None
    assert found.project_keys.access_key_id == "AK2"
    assert found.project_keys.secret_access_key.get_secret_value() == SECRET

    assert await repo.grant("data", "p", now_ms=3) is None
    assert await repo.grant("data", "p", now_ms=4) == "p"  # already so: unchanged
    assert await repo.grant("other.bucket-1", "q", now_ms=5) is None
    assert (await repo.lookup("q", "data")).granted_to == "p"
    assert await repo.list() == AccessListing(
        keys=[StoredKeys("p", "AK2", 2, readable=True)],
        grants=[BucketGrant("data", "p", 3), BucketGrant("other.bucket-1", "q", 5)],
    )

    assert await repo.clear_keys("p") is True
    assert await repo.clear_keys("p") is False
    assert await repo.revoke("data") == "p"
    assert await repo.revoke("data") is None
    assert await repo.lookup("p", "data") == BucketLookup(None, None)
    assert await repo.list() == AccessListing([], [BucketGrant("other.bucket-1", "q", 5)])


async def test_a_bucket_is_granted_to_one_project_at_most(repo: ObjectAccessRepository) -> None:
    await repo.grant("shared", "p", now_ms=1)
    with pytest.raises(errors.BucketTaken) as refused:
        await repo.grant("shared", "q", now_ms=2)
    assert refused.value.message == (
        "The bucket 'shared' is granted to project 'p'; move it with --move.")
    assert (await repo.lookup("q", "shared")).granted_to == "p"

    assert await repo.grant("shared", "q", move=True, now_ms=3) == "p"
    assert (await repo.list()).grants == [BucketGrant("shared", "q", 3)]


@pytest.mark.parametrize(
    "bucket",
    ["ab", "x" * 64, "Upper", "under_score", "-dash", "dot.", "sp ace", "a/b", ""],
)
async def test_a_name_s3_would_refuse_is_not_granted(
    repo: ObjectAccessRepository, bucket: str
) -> None:
    with pytest.raises(errors.InvalidBucketName):
        await repo.grant(bucket, "p", now_ms=1)
    assert (await repo.list()).grants == []


@pytest.mark.parametrize("bucket", ["abc", "x" * 63, "a.b-c.9", "0-0"])
async def test_the_s3_names_are_granted(repo: ObjectAccessRepository, bucket: str) -> None:
    assert await repo.grant(bucket, "p", now_ms=1) is None


async def test_the_secret_is_stored_encrypted_and_never_logged(
    database: tuple[str, AsyncEngine], repo: ObjectAccessRepository,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url, engine = database
    caplog.set_level(logging.DEBUG)
    await repo.set_keys("p", "AK", SecretStr(SECRET), now_ms=1)
    found = await repo.lookup("p", "b-1")
    listed = await repo.list()

    async with engine.connect() as conn:
        row = (await conn.execute(text("SELECT * FROM project_storage_keys"))).one()
    assert row.access_key_id == "AK"
    assert all(SECRET not in str(value) for value in row)
    if url.startswith("sqlite"):
        await engine.dispose()  # the WAL back into the file, though both are read
        files = Path(url.split("///", 1)[1]).parent.glob("demanager.db*")
        assert all(SECRET.encode() not in f.read_bytes() for f in files)

    shown = f"{found!r} {found.project_keys} {listed!r} {listed}"
    assert SECRET not in shown and SECRET not in caplog.text


async def test_keys_under_another_server_key_are_refused_clearly(
    database: tuple[str, AsyncEngine], repo: ObjectAccessRepository,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await repo.set_keys("p", "AK", SecretStr(SECRET), now_ms=1)
    other = ObjectAccessRepository(make_sessionmaker(database[1]), b"another key")
    with pytest.raises(errors.StorageKeysUnreadable) as refused:
        await other.lookup("p", "b-1")
    assert "cannot be decrypted with this server's key" in refused.value.message
    # A caller sees a project without usable keys (6319); the log says why.
    with pytest.raises(errors.ObjectStorageCredentialsMissing):
        await ObjectAccess(S3Options(), other).options_for("p", "b-1")
    assert "cannot be decrypted" in caplog.text
    assert (await other.list()).keys == [StoredKeys("p", "AK", 1, readable=False)]
    # The bucket's grant is still answered for a project without keys.
    assert await other.lookup("q", "b-1") == BucketLookup(None, None)


async def test_a_ciphertext_copied_to_another_project_is_refused(
    database: tuple[str, AsyncEngine], repo: ObjectAccessRepository,
) -> None:
    await repo.set_keys("p", "AK", SecretStr(SECRET), now_ms=1)
    await repo.set_keys("q", "AK", SecretStr("q-secret"), now_ms=1)
    async with database[1].begin() as conn:
        await conn.execute(text(
            "UPDATE project_storage_keys SET secret_ciphertext = "
            "(SELECT secret_ciphertext FROM project_storage_keys WHERE project_id = 'p') "
            "WHERE project_id = 'q'"
        ))
    with pytest.raises(errors.StorageKeysUnreadable):
        await repo.lookup("q", "b-1")
    assert (await repo.list()).keys[1] == StoredKeys("q", "AK", 1, readable=False)


async def test_object_access_reaches_a_bucket_through_the_repository(
    repo: ObjectAccessRepository,
) -> None:
    access = ObjectAccess(DEPLOYMENT, repo)
    await repo.grant("granted", "p", now_ms=1)
    assert await access.options_for("p", "granted") == DEPLOYMENT
    with pytest.raises(errors.ObjectStorageAccessError):
        await access.options_for("q", "granted")
    await repo.set_keys("q", "QAK", SecretStr(SECRET), now_ms=2)
    own = await access.options_for("q", "granted")
    assert own.access_key_id == "QAK" and own.endpoint_url == DEPLOYMENT.endpoint_url
    assert own.secret_access_key is not None
    assert own.secret_access_key.get_secret_value() == SECRET


async def test_racing_grants_of_one_bucket_leave_one_project(
    database: tuple[str, AsyncEngine],
) -> None:
    # Two engines: two connection pools, as two operators' commands would have.
    url, engine = database
    second = make_engine(url)
    try:
        repos = [ObjectAccessRepository(make_sessionmaker(e), KEY) for e in (engine, second)]
        outcomes = await asyncio.gather(
            *(repos[n % 2].grant("contended", f"p{n}", now_ms=n) for n in range(8)),
            return_exceptions=True,
        )
    finally:
        await second.dispose()
    winners = [n for n, outcome in enumerate(outcomes) if outcome is None]
    assert len(winners) == 1
    assert all(isinstance(o, errors.BucketTaken) for n, o in enumerate(outcomes)
               if n not in winners)
    assert (await repos[0].list()).grants == [
        BucketGrant("contended", f"p{winners[0]}", winners[0])]


async def test_racing_key_changes_leave_one_pair_whole(
    database: tuple[str, AsyncEngine],
) -> None:
    url, engine = database
    second = make_engine(url)
    try:
        repos = [ObjectAccessRepository(make_sessionmaker(e), KEY) for e in (engine, second)]
        await asyncio.gather(*(
            repos[n % 2].set_keys("p", f"AK{n}", SecretStr(f"SK{n}"), now_ms=n)
            for n in range(8)
        ))
    finally:
        await second.dispose()
    keys = (await repos[0].lookup("p", "b-1")).project_keys
    assert keys is not None
    assert keys.secret_access_key.get_secret_value() == "SK" + keys.access_key_id[2:]


def test_an_empty_server_key_is_refused(database: tuple[str, AsyncEngine]) -> None:
    with pytest.raises(ValueError, match="empty"):
        ObjectAccessRepository(make_sessionmaker(database[1]), b"")


async def test_migration_0010_goes_down_and_up(
    database: tuple[str, AsyncEngine], repo: ObjectAccessRepository,
) -> None:
    url, engine = database

    async def tables() -> set[str]:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))

    await repo.grant("kept", "p", now_ms=1)
    await asyncio.to_thread(command.downgrade, alembic_config(url), "0009")
    assert not {"project_storage_keys", "bucket_grants"} & await tables()
    await asyncio.to_thread(upgrade, url)
    assert {"project_storage_keys", "bucket_grants"} <= await tables()
    async with engine.connect() as conn:
        indexes = await conn.run_sync(
            lambda sync: inspect(sync).get_indexes("bucket_grants"))
    assert [i["column_names"] for i in indexes] == [["project_id"]]
    assert await repo.list() == AccessListing([], [])
