"""The bucket-to-folder sync against a real S3 server (moto on loopback)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
import pytest
from pydantic import SecretStr

from demanager import errors
from demanager.objectstore.client import SINGLE_GET_BYTES, ObjectStore
from demanager.objectstore.options import S3Options
from demanager.objectstore.paths import BucketPath
from demanager.objectstore.sync import FolderSync
from tests.objectstore.conftest import options

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

PREFIX = "work/"


def _raw(s3_endpoint: str) -> S3Client:
    opts = options(s3_endpoint)
    assert opts.secret_access_key is not None
    return boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id=opts.access_key_id,
        aws_secret_access_key=opts.secret_access_key.get_secret_value(),
    )


@pytest.fixture
def s3(s3_endpoint: str) -> S3Client:
    return _raw(s3_endpoint)


def _put(s3: S3Client, bucket: str, key: str, body: bytes) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=body)


def _get(s3: S3Client, bucket: str, key: str) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def _keys(s3: S3Client, bucket: str) -> set[str]:
    listing = s3.list_objects_v2(Bucket=bucket)
    return {o["Key"] for o in listing.get("Contents", [])}


def _sync(store: ObjectStore, bucket: str, tmp_path: Path) -> tuple[FolderSync, Path]:
    folder = tmp_path / "work"
    folder.mkdir(exist_ok=True)
    return FolderSync(store, BucketPath(bucket, PREFIX), folder, tmp_path / "manifest.json"), folder


def _edit(path: Path, body: bytes) -> None:
    path.write_bytes(body)
    # Push the mtime on, so that an edit within the clock's resolution still shows.
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def test_files_come_down_and_changes_go_up(
    store: ObjectStore, bucket: str, s3: S3Client, tmp_path: Path
) -> None:
    _put(s3, bucket, "work/a.txt", b"alpha")
    _put(s3, bucket, "work/sub/b.txt", b"beta")
    _put(s3, bucket, "elsewhere/c.txt", b"not ours")
    sync, folder = _sync(store, bucket, tmp_path)

    report = sync.down_blocking()
    assert sorted(report.downloaded) == ["a.txt", "sub/b.txt"]
    assert (folder / "a.txt").read_bytes() == b"alpha"
    assert (folder / "sub" / "b.txt").read_bytes() == b"beta"
    assert not (folder / "c.txt").exists()

    _edit(folder / "a.txt", b"alpha, edited")
    (folder / "new.txt").write_bytes(b"new")
    report = sync.up_blocking()
    assert sorted(report.uploaded) == ["a.txt", "new.txt"]
    assert _get(s3, bucket, "work/a.txt") == b"alpha, edited"
    assert _get(s3, bucket, "work/new.txt") == b"new"

    # Nothing changed since: a second pass moves nothing either way.
    assert sync.up_blocking().uploaded == []
    assert sync.down_blocking().downloaded == []


async def test_the_async_face_runs_the_same_sync(
    store: ObjectStore, bucket: str, s3: S3Client, tmp_path: Path
) -> None:
    _put(s3, bucket, "work/a.txt", b"alpha")
    sync, folder = _sync(store, bucket, tmp_path)
    assert (await sync.down()).downloaded == ["a.txt"]
    (folder / "b.txt").write_bytes(b"b")
    assert (await sync.up()).uploaded == ["b.txt"]


def test_only_what_the_user_deleted_is_deleted_in_the_bucket(
    store: ObjectStore, bucket: str, s3: S3Client, tmp_path: Path
) -> None:
    _put(s3, bucket, "work/gone.txt", b"x")
    _put(s3, bucket, "work/kept.txt", b"y")
    sync, folder = _sync(store, bucket, tmp_path)
    sync.down_blocking()
    # Written by someone else after the sync down: never seen here, never deleted.
    _put(s3, bucket, "work/theirs.txt", b"z")

    (folder / "gone.txt").unlink()
    report = sync.up_blocking()

    assert report.deleted_remote == ["gone.txt"]
    assert _keys(s3, bucket) == {"work/kept.txt", "work/theirs.txt"}


def test_a_lost_manifest_deletes_nothing(
    store: ObjectStore, bucket: str, s3: S3Client, tmp_path: Path
) -> None:
    _put(s3, bucket, "work/a.txt", b"x")
    sync, folder = _sync(store, bucket, tmp_path)
    sync.down_blocking()
    (folder / "a.txt").unlink()
    (tmp_path / "manifest.json").unlink()
    assert sync.up_blocking().deleted_remote == []
    assert _keys(s3, bucket) == {"work/a.txt"}


def test_a_deletion_in_the_bucket_reaches_the_folder_at_the_next_start(
    store: ObjectStore, bucket: str, s3: S3Client, tmp_path: Path
) -> None:
    _put(s3, bucket, "work/a.txt", b"x")
    sync, folder = _sync(store, bucket, tmp_path)
    sync.down_blocking()
    s3.delete_object(Bucket=bucket, Key="work/a.txt")
    assert sync.down_blocking().deleted_local == ["a.txt"]
    assert not (folder / "a.txt").exists()


def test_conflict_on_the_way_up_keeps_the_bucket_version(
    store: ObjectStore, bucket: str, s3: S3Client, tmp_path: Path
) -> None:
    _put(s3, bucket, "work/a.txt", b"original")
    sync, folder = _sync(store, bucket, tmp_path)
    sync.down_blocking()
    _put(s3, bucket, "work/a.txt", b"changed in the bucket")
    _edit(folder / "a.txt", b"changed here")

    report = sync.up_blocking(stamp="T1")

    assert report.kept_copies == ["a.txt.bucket-T1"]
    assert _get(s3, bucket, "work/a.txt") == b"changed here"
    assert _get(s3, bucket, "work/a.txt.bucket-T1") == b"changed in the bucket"


def test_conflict_on_the_way_down_keeps_the_local_version(
    store: ObjectStore, bucket: str, s3: S3Client, tmp_path: Path
) -> None:
    _put(s3, bucket, "work/a.txt", b"original")
    sync, folder = _sync(store, bucket, tmp_path)
    sync.down_blocking()
    _put(s3, bucket, "work/a.txt", b"changed in the bucket")
    _edit(folder / "a.txt", b"changed here")

    report = sync.down_blocking(stamp="T2")

    assert report.kept_copies == ["a.txt.local-T2"]
    assert (folder / "a.txt").read_bytes() == b"changed in the bucket"
    assert (folder / "a.txt.local-T2").read_bytes() == b"changed here"
    # The kept copy is the user's: it goes up as a new file, and nothing is lost.
    sync.up_blocking()
    assert _get(s3, bucket, "work/a.txt.local-T2") == b"changed here"


def test_a_key_that_climbs_out_is_never_written(
    store: ObjectStore, bucket: str, s3: S3Client, tmp_path: Path
) -> None:
    _put(s3, bucket, "work/../escape.txt", b"x")
    _put(s3, bucket, "work/ok.txt", b"y")
    sync, _folder = _sync(store, bucket, tmp_path)
    assert sync.down_blocking().downloaded == ["ok.txt"]
    assert not (tmp_path / "escape.txt").exists()


def test_no_download_through_a_link_out_of_the_folder(
    store: ObjectStore, bucket: str, s3: S3Client, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    _put(s3, bucket, "work/evil/x.txt", b"x")
    _put(s3, bucket, "work/evil/deeper/y.txt", b"y")
    sync, folder = _sync(store, bucket, tmp_path)
    (folder / "evil").symlink_to(outside)
    assert sync.down_blocking().downloaded == []
    assert list(outside.iterdir()) == []


def test_a_name_both_file_and_folder_skips_one_and_syncs_the_rest(
    store: ObjectStore, bucket: str, s3: S3Client, tmp_path: Path
) -> None:
    _put(s3, bucket, "work/a", b"file")
    _put(s3, bucket, "work/a/b", b"inside")
    _put(s3, bucket, "work/c", b"c")
    sync, folder = _sync(store, bucket, tmp_path)
    report = sync.down_blocking()
    # Listing order puts "a" first: it becomes the file, "a/b" has nowhere to go.
    assert report.downloaded == ["a", "c"]
    assert (folder / "a").read_bytes() == b"file"


def test_many_files_and_a_big_one_move_together_and_are_all_recorded(
    store: ObjectStore, bucket: str, s3: S3Client, tmp_path: Path
) -> None:
    names = [f"d{i % 4}/f{i:02d}" for i in range(40)]
    for name in names:
        _put(s3, bucket, PREFIX + name, name.encode())
    # Past the single-request size, so it comes down in ranges.
    big = os.urandom(SINGLE_GET_BYTES + 1)
    _put(s3, bucket, PREFIX + "big.bin", big)
    sync, folder = _sync(store, bucket, tmp_path)

    report = sync.down_blocking()
    # Moved several at once, reported in the plan's (the listing's) order.
    assert report.downloaded == sorted([*names, "big.bin"])
    assert all((folder / name).read_bytes() == name.encode() for name in names)
    assert (folder / "big.bin").read_bytes() == big

    for name in names[:10]:
        _edit(folder / name, b"edited " + name.encode())
    assert sync.up_blocking().uploaded == sorted(names[:10])
    assert _get(s3, bucket, PREFIX + names[0]) == b"edited " + names[0].encode()
    assert sync.up_blocking().uploaded == []
    assert sync.down_blocking().downloaded == []


def test_a_failed_transfer_leaves_the_others_recorded(
    store: ObjectStore, bucket: str, s3: S3Client, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    names = [f"f{i:02d}" for i in range(30)]
    for name in names:
        _put(s3, bucket, PREFIX + name, name.encode())
    sync, _folder = _sync(store, bucket, tmp_path)
    real = store.download

    def failing(bucket: str, key: str, target: Path, size: int | None = None) -> str:
        if key == PREFIX + "f05":
            raise errors.ObjectStorageAccessError("the object went away.")
        return real(bucket, key, target, size)

    monkeypatch.setattr(store, "download", failing)
    with pytest.raises(errors.ObjectStorageAccessError, match="went away"):
        sync.down_blocking()
    monkeypatch.setattr(store, "download", real)

    # Every file that came down was recorded: the next start fetches only the rest,
    # and keeps no copy of a file it already wrote.
    report = sync.down_blocking()
    assert "f05" in report.downloaded
    assert report.kept_copies == []
    assert sync.down_blocking().downloaded == []


def test_a_missing_bucket_is_6320(store: ObjectStore, tmp_path: Path) -> None:
    sync, _folder = _sync(store, "no-such-bucket-here", tmp_path)
    with pytest.raises(errors.ObjectStorageAccessError, match="does not exist"):
        sync.down_blocking()
    with pytest.raises(errors.ObjectStorageAccessError):
        store.check("no-such-bucket-here", PREFIX)


def test_wrong_credentials_are_6320_without_the_secret(
    s3_endpoint: str, bucket: str, tmp_path: Path
) -> None:
    wrong = ObjectStore(options(s3_endpoint, secret="not-the-secret"))
    with pytest.raises(errors.ObjectStorageAccessError, match="refused") as raised:
        wrong.check(bucket, PREFIX)
    assert "not-the-secret" not in str(raised.value)


def test_no_credentials_is_6319() -> None:
    # Built without the session's keys: this test must not depend on another having
    # started the S3 server first.
    no_key = S3Options(endpoint_url="http://127.0.0.1:9", secret_access_key=SecretStr("x"))
    with pytest.raises(errors.ObjectStorageCredentialsMissing):
        ObjectStore(no_key)
