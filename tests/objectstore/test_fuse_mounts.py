"""Whole buckets (obsfs) as real FUSE mounts (``backends/fusemounts.py`` through
``HostMounts``): real rclone, real /dev/fuse, a real S3 server (moto on loopback), and
the reads and writes done by another uid, as a notebook's would be."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
from collections.abc import Awaitable, Iterator
from pathlib import Path

import psutil
import pytest

from demanager import errors
from demanager.backends import fusemounts, objectmounts
from demanager.backends.objectmounts import HostMounts, Prepared
from demanager.backends.sandbox import Account
from demanager.domain.instance import WORK_DIR, Location, Storage
from demanager.objectstore.options import S3Options
from tests.objectstore.test_host_mounts import (
    PROJECT,
    Grants,
    _access,
    _message,
    _obsfs,
    _spec,
)
from tests.s3server import MotoServer, Relay
from tests.server import notebook_python, traversable_dir

NOTEBOOK = Account("nobody", 65534, 65534)
"""The instance's uid stand-in: the reads and writes are done as it."""
STRANGER = 65533
"""Another instance's uid."""


REQUIRE_FUSE_ENV = "DEMANAGER_TEST_REQUIRE_FUSE"
"""Set (CI does): a host without usable FUSE mounts fails these tests instead of skipping."""


def _fuse() -> str:
    """The rclone to mount with; skips (or, with ``REQUIRE_FUSE_ENV``, fails) where FUSE
    mounts cannot be made."""
    try:
        choice = fusemounts.choose(S3Options(obsfs_mount="fuse"))
    except fusemounts.FuseUnavailable as exc:
        if os.environ.get(REQUIRE_FUSE_ENV, "").strip() not in ("", "0"):
            pytest.fail(f"no FUSE mounts here: {exc} ({REQUIRE_FUSE_ENV}=1)", pytrace=False)
        pytest.skip(f"no FUSE mounts here: {exc}")
    assert choice.rclone is not None
    return choice.rclone


@pytest.fixture
def root() -> Iterator[Path]:
    path = traversable_dir("demanager-fuse-")
    try:
        yield path / "objects"
    finally:
        left = fusemounts.mounted_under(path)
        for mount in left:
            subprocess.run(["fusermount3", "-u", "-z", str(mount)], check=False)
        shutil.rmtree(path, ignore_errors=True)
        assert left == [], "a test left a mount behind"


def _mounts(moto: MotoServer, root: Path, *buckets: str) -> HostMounts:
    mounts = HostMounts(root, _access(moto, moto.endpoint, Grants(**dict.fromkeys(buckets,
                                                                                 PROJECT))))
    mounts.use_fuse(_fuse())
    return mounts


def _as(uid: int, gid: int, code: str) -> str:
    """Run ``code`` as ``uid``; what it prints (the outcome, or the error's name)."""
    done = subprocess.run(
        [str(notebook_python() or "/usr/bin/python3"), "-I", "-S", "-c", code],
        user=uid, group=gid, extra_groups=[], capture_output=True, text=True, timeout=60,
        cwd="/", check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _write(path: Path, text: str) -> str:
    return (
        "try:\n"
        f"    open({str(path)!r}, 'w').write({text!r})\n"
        "    print('written')\n"
        "except OSError as exc:\n"
        "    print(type(exc).__name__)\n"
    )


def _read(path: Path) -> str:
    return (
        "try:\n"
        f"    print(open({str(path)!r}).read())\n"
        "except OSError as exc:\n"
        "    print(type(exc).__name__)\n"
    )


def _rclones(folder: Path) -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["cmdline"])
            if p.info["cmdline"] and str(folder) in p.info["cmdline"]]


def test_read_only_and_read_write_buckets_are_mounts(
    moto: MotoServer, root: Path
) -> None:
    shared, results = moto.new_bucket("ro"), moto.new_bucket("rw")
    s3 = moto.client()
    s3.put_object(Bucket=shared, Key="ref/data.csv", Body=b"a,b")
    mounts = _mounts(moto, root, shared, results)
    spec = _spec(_obsfs(shared, "ref", "ReadOnlyMany"), _obsfs(results, "out", "ReadWriteMany"))

    async def scenario() -> None:
        prepared = await _by_path(mounts.prepare(spec, NOTEBOOK))
        ref, out = prepared["ref"], prepared["out"]
        assert os.path.ismount(ref) and os.path.ismount(out)
        uid, gid = NOTEBOOK.uid, NOTEBOOK.gid
        assert _as(uid, gid, _read(ref / "ref" / "data.csv")) == "a,b"
        assert _as(uid, gid, _write(ref / "new.csv", "no")) in ("PermissionError", "OSError")
        assert _as(uid, gid, _write(ref / "ref" / "data.csv", "no")) in (
            "PermissionError", "OSError")
        assert _as(uid, gid, _write(out / "result.txt", "42")) == "written"
        # Another instance's uid reaches neither mount.
        assert _as(STRANGER, STRANGER, _read(out / "result.txt")) == "PermissionError"
        assert _as(STRANGER, STRANGER, _read(ref / "ref" / "data.csv")) == "PermissionError"
        # The keys are in no command line (which every user may read).
        for folder in (ref, out):
            found = _rclones(folder)
            assert len(found) == 1, found
            argv = " ".join(found[0].cmdline())
            assert moto.secret_key not in argv and moto.access_key not in argv
        assert mounts.warning(spec.instance_id) is None
        await mounts.finish(spec.instance_id)
        assert not fusemounts.mounted_under(mounts.instance_dir(spec.instance_id))
        assert not _rclones(out), "rclone exits with its unmount"
        await mounts.remove(spec.instance_id)
        assert not mounts.instance_dir(spec.instance_id).exists()

    asyncio.run(scenario())
    # Written, uploaded at the stop; and the delete removed folders, never the buckets.
    assert s3.get_object(Bucket=results, Key="result.txt")["Body"].read() == b"42"
    assert s3.get_object(Bucket=shared, Key="ref/data.csv")["Body"].read() == b"a,b"
    assert {o["Key"] for o in s3.list_objects_v2(Bucket=shared)["Contents"]} == {"ref/data.csv"}


def test_a_missing_bucket_fails_the_start_and_leaves_no_mount(
    moto: MotoServer, root: Path
) -> None:
    present = moto.new_bucket("rw")
    mounts = _mounts(moto, root, present, "no-such-bucket")
    spec = _spec(_obsfs(present, "out", "ReadWriteMany"),
                 _obsfs("no-such-bucket", "gone", "ReadOnlyMany"))
    with pytest.raises(errors.PermanentBackendError) as failed:
        asyncio.run(mounts.prepare(spec, NOTEBOOK))
    assert failed.value.code == "ModelArts.6320"
    assert "no-such-bucket" in failed.value.message
    assert fusemounts.mounted_under(root) == []
    asyncio.run(mounts.remove(spec.instance_id))


def test_a_restarted_server_adopts_the_mounts_and_reports_one_that_ended(
    moto: MotoServer, root: Path
) -> None:
    bucket = moto.new_bucket("rw")
    spec = _spec(_obsfs(bucket, "out", "ReadWriteMany"), _obsfs(bucket, "again", "ReadOnlyMany"))

    async def scenario() -> None:
        first = _mounts(moto, root, bucket)
        prepared = await _by_path(first.prepare(spec, NOTEBOOK))
        # A new server on the same data dir: the mounts live on, and it can end them.
        second = _mounts(moto, root, bucket)
        assert second.warning(spec.instance_id) is None
        assert _as(NOTEBOOK.uid, NOTEBOOK.gid, _write(prepared["out"] / "a.txt", "a")) == (
            "written")
        for rclone in _rclones(prepared["again"]):
            rclone.send_signal(signal.SIGKILL)
        await _until(lambda: second.warning(spec.instance_id) is not None)
        ended = second.warning(spec.instance_id)
        assert ended is not None and bucket in ended.message and "/again" in ended.message
        await second.finish(spec.instance_id)
        assert fusemounts.mounted_under(root) == []
        await second.remove(spec.instance_id)

    asyncio.run(scenario())
    assert moto.client().get_object(Bucket=bucket, Key="a.txt")["Body"].read() == b"a"


def test_a_stop_while_the_store_is_away_unmounts_once_all_is_uploaded(
    moto: MotoServer, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(objectmounts, "FLUSH_SECONDS", 1.0)
    bucket = moto.new_bucket("rw")
    relay = Relay(moto.port).restore()
    mounts = HostMounts(root, _access(moto, relay.endpoint, Grants(**{bucket: PROJECT})),
                        interval=0.2)
    mounts.use_fuse(_fuse())
    spec = _spec(_obsfs(bucket, "out", "ReadWriteMany"))

    async def scenario() -> None:
        folder = (await mounts.prepare(spec, NOTEBOOK))[0].folder
        # Written, then the store goes before the upload (WRITE_BACK_SECONDS after the
        # close). While it is away, what needs it (a new file, a listing) would wait.
        assert _as(NOTEBOOK.uid, NOTEBOOK.gid, _write(folder / "late.txt", "kept")) == "written"
        relay.cut()
        # The stop goes on; the mount stays until rclone has uploaded the file.
        await mounts.finish(spec.instance_id)
        assert os.path.ismount(folder)
        waiting = mounts.warning(spec.instance_id)
        assert waiting is not None and "rclone has not uploaded 1 files" in waiting.message
        relay.restore()
        await _until(lambda: "unreachable from" in _message(mounts, spec.instance_id), 90)
        assert not fusemounts.mounted_under(folder)
        await mounts.stop()
        await mounts.remove(spec.instance_id)

    try:
        asyncio.run(scenario())
    finally:
        relay.cut()
    assert moto.client().get_object(Bucket=bucket, Key="late.txt")["Body"].read() == b"kept"


def test_a_copy_synced_before_gives_way_to_the_mount(moto: MotoServer, root: Path) -> None:
    bucket = moto.new_bucket("rw")
    mounts = _mounts(moto, root, bucket)
    spec = _spec(_obsfs(bucket, "out", "ReadWriteMany"))

    async def scenario() -> None:
        mounts.use_fuse(None)
        folder = (await mounts.prepare(spec, NOTEBOOK))[0].folder
        assert not os.path.ismount(folder)
        (folder / "copied.txt").write_text("written in the copy")
        # The server restarts with FUSE: the copy goes up, then the mount takes its place.
        mounts.use_fuse(_fuse())
        folder = (await mounts.prepare(spec, NOTEBOOK))[0].folder
        assert os.path.ismount(folder)
        assert (folder / "copied.txt").read_text() == "written in the copy"
        await mounts.finish(spec.instance_id)
        await mounts.remove(spec.instance_id)

    asyncio.run(scenario())
    body = moto.client().get_object(Bucket=bucket, Key="copied.txt")["Body"].read()
    assert body == b"written in the copy"


def test_a_work_dir_with_mounts_inside_stays_a_copy(moto: MotoServer, root: Path) -> None:
    work, ref = moto.new_bucket("rw"), moto.new_bucket("ro")
    mounts = _mounts(moto, root, work, ref)
    whole = Storage("obsfs", Location(path=work, mount_path=WORK_DIR,
                                      access_modes="ReadWriteMany"))
    spec = _spec(whole, _obsfs(ref, "ref", "ReadOnlyMany"))

    async def scenario() -> None:
        prepared = {p.mount.name: p.folder for p in await mounts.prepare(spec, NOTEBOOK)}
        # The process backend links the other mounts into the work dir: a copy holds
        # links, a bucket does not.
        assert not os.path.ismount(prepared["work"])
        assert os.path.ismount(prepared["mount-0"])
        await mounts.finish(spec.instance_id)
        await mounts.remove(spec.instance_id)

    asyncio.run(scenario())


async def _by_path(preparing: Awaitable[list[Prepared]]) -> dict[str, Path]:
    """The prepared folders by the last part of their mount path."""
    return {p.mount.mount_path.rsplit("/", 1)[1]: p.folder for p in await preparing}


async def _until(predicate: object, timeout: float = 20.0) -> None:
    assert callable(predicate)
    for _ in range(int(timeout / 0.1)):
        if predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("timed out")
