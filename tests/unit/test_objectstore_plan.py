"""The sync's decisions: what moves, what is deleted, and who wins a conflict."""

from __future__ import annotations

import pytest

from demanager import errors
from demanager.objectstore.paths import BucketPath, parse_obs_path, relative_key
from demanager.objectstore.plan import (
    DeleteLocal,
    DeleteRemote,
    Download,
    Forget,
    KeepLocalCopy,
    KeepRemoteCopy,
    LocalEntry,
    RemoteEntry,
    SyncedEntry,
    Upload,
    plan_down,
    plan_up,
)

S = "STAMP"
OBJ = RemoteEntry(etag='"e1"', size=3)
NEWER = RemoteEntry(etag='"e2"', size=4)
FILE = LocalEntry(size=3, mtime_ns=100)
EDITED = LocalEntry(size=5, mtime_ns=200)
SYNCED = {"a.txt": SyncedEntry('"e1"', 3, 100)}


def test_down_fetches_what_is_missing_here() -> None:
    assert plan_down({"a.txt": OBJ}, {}, {}, S) == [Download("a.txt")]


def test_down_leaves_equal_files_alone() -> None:
    assert plan_down({"a.txt": OBJ}, {"a.txt": FILE}, SYNCED, S) == []


def test_down_takes_a_bucket_change_over_an_untouched_file() -> None:
    assert plan_down({"a.txt": NEWER}, {"a.txt": FILE}, SYNCED, S) == [Download("a.txt")]


def test_down_conflict_bucket_wins_and_the_local_file_is_kept() -> None:
    assert plan_down({"a.txt": NEWER}, {"a.txt": EDITED}, SYNCED, S) == [
        KeepLocalCopy("a.txt", "a.txt.local-STAMP"),
        Download("a.txt"),
    ]


def test_down_same_name_without_a_past_keeps_both() -> None:
    assert plan_down({"a.txt": OBJ}, {"a.txt": FILE}, {}, S) == [
        KeepLocalCopy("a.txt", "a.txt.local-STAMP"),
        Download("a.txt"),
    ]


def test_down_keeps_a_local_change_when_the_bucket_did_not_change() -> None:
    assert plan_down({"a.txt": OBJ}, {"a.txt": EDITED}, SYNCED, S) == []


def test_down_deletes_here_what_was_deleted_in_the_bucket() -> None:
    assert plan_down({}, {"a.txt": FILE}, SYNCED, S) == [DeleteLocal("a.txt")]


def test_down_keeps_a_file_edited_here_that_the_bucket_deleted() -> None:
    assert plan_down({}, {"a.txt": EDITED}, SYNCED, S) == []


def test_down_never_deletes_a_file_that_was_never_synced() -> None:
    assert plan_down({}, {"mine.txt": FILE}, {}, S) == []


def test_down_forgets_what_is_gone_on_both_sides() -> None:
    assert plan_down({}, {}, SYNCED, S) == [Forget("a.txt")]


def test_up_uploads_new_and_edited_files() -> None:
    assert plan_up({}, {"new.txt": FILE}, {}, S) == [Upload("new.txt")]
    assert plan_up({"a.txt": OBJ}, {"a.txt": EDITED}, SYNCED, S) == [Upload("a.txt")]


def test_up_leaves_untouched_files_alone_even_when_the_bucket_changed() -> None:
    assert plan_up({"a.txt": NEWER}, {"a.txt": FILE}, SYNCED, S) == []


def test_up_conflict_local_wins_and_the_bucket_object_is_kept() -> None:
    assert plan_up({"a.txt": NEWER}, {"a.txt": EDITED}, SYNCED, S) == [
        KeepRemoteCopy("a.txt", "a.txt.bucket-STAMP"),
        Upload("a.txt"),
    ]


def test_up_new_file_over_an_unknown_object_keeps_the_object() -> None:
    assert plan_up({"a.txt": OBJ}, {"a.txt": FILE}, {}, S) == [
        KeepRemoteCopy("a.txt", "a.txt.bucket-STAMP"),
        Upload("a.txt"),
    ]


def test_up_deletes_in_the_bucket_only_what_the_user_deleted() -> None:
    assert plan_up({"a.txt": OBJ}, {}, SYNCED, S) == [DeleteRemote("a.txt")]


def test_up_never_deletes_objects_it_never_synced() -> None:
    assert plan_up({"theirs.txt": OBJ}, {}, {}, S) == []


def test_up_keeps_an_object_rewritten_since_the_user_deleted_it() -> None:
    assert plan_up({"a.txt": NEWER}, {}, SYNCED, S) == [Forget("a.txt")]


def test_up_forgets_what_is_gone_on_both_sides() -> None:
    assert plan_up({}, {}, SYNCED, S) == [Forget("a.txt")]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/bucket/dir/", BucketPath("bucket", "dir/")),
        ("obs://bucket/a/b/", BucketPath("bucket", "a/b/")),
    ],
)
def test_obs_paths(path: str, expected: BucketPath) -> None:
    assert parse_obs_path(path) == expected


def test_bucket_root_is_6358() -> None:
    with pytest.raises(errors.PathIsBucketRoot):
        parse_obs_path("/bucket/")


@pytest.mark.parametrize("path", ["/bucket/../other/", "/bucket/a/./b/", "/bucket//a/"])
def test_dot_segments_and_empty_segments_are_refused(path: str) -> None:
    with pytest.raises(errors.InvalidValue):
        parse_obs_path(path)


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("p/a.txt", "a.txt"),
        ("p/sub/b.txt", "sub/b.txt"),
        ("p/sub/", None),
        ("p/../etc/passwd", None),
        ("p//x", None),
        ("p/./x", None),
        ("other/x", None),
    ],
)
def test_keys_that_cannot_name_a_file_inside_are_skipped(key: str, expected: str | None) -> None:
    assert relative_key("p/", key) == expected
