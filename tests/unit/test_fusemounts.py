"""What the server asks of rclone (``backends/fusemounts.py``), without mounting: the
choice between FUSE and copies, the command line, and where the keys go."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from demanager.backends import fusemounts
from demanager.backends.sandbox import Account
from demanager.objectstore.options import S3Options

OWNER = Account("dm-test", 4321, 4322)
SECRET = "sk-never-on-a-command-line"


def _options(**extra: object) -> S3Options:
    return S3Options.model_validate(
        {"endpoint_url": "http://127.0.0.1:9", "access_key_id": "AK1",
         "secret_access_key": SECRET, **extra}
    )


def _request(tmp_path: Path, *, read_only: bool) -> fusemounts.MountRequest:
    return fusemounts.MountRequest(
        bucket="data", folder=tmp_path / "mount-0", state_dir=tmp_path / ".sync",
        read_only=read_only, owner=OWNER, options=_options(),
    )


def test_sync_never_mounts_and_an_unusable_fuse_is_refused_or_falls_back() -> None:
    chosen = fusemounts.choose(_options(obsfs_mount="sync"))
    assert chosen.rclone is None and "OBSFS_MOUNT=sync" in chosen.why
    missing = {"rclone": "/nonexistent/rclone"}
    fallback = fusemounts.choose(_options(obsfs_mount="auto", **missing))
    assert fallback.rclone is None and fallback.why.startswith("synced copies, since ")
    with pytest.raises(fusemounts.FuseUnavailable, match="DEMANAGER_S3__OBSFS_MOUNT=fuse, but"):
        fusemounts.choose(_options(obsfs_mount="fuse", **missing))


def test_the_keys_are_in_the_environment_only(tmp_path: Path) -> None:
    request = _request(tmp_path, read_only=False)
    argv = fusemounts.Rclone("rclone").command(request)
    assert not [part for part in argv if SECRET in part or "AK1" in part]
    env = fusemounts.rclone_env(request.options, {"HTTPS_PROXY": "p", "DEMANAGER_X": "y"},
                                home=tmp_path)
    assert env["RCLONE_CONFIG_DEMANAGER_SECRET_ACCESS_KEY"] == SECRET
    assert env["RCLONE_CONFIG_DEMANAGER_ENDPOINT"] == "http://127.0.0.1:9"
    assert env["HTTPS_PROXY"] == "p" and "DEMANAGER_X" not in env
    assert argv[2] == "DEMANAGER:data"


def test_owners_and_modes_close_a_read_only_mount_to_writes(tmp_path: Path) -> None:
    rclone = fusemounts.Rclone("rclone")
    read_only = " ".join(rclone.command(_request(tmp_path, read_only=True)))
    assert "--read-only" in read_only
    assert "--uid 0 --gid 4322 --umask 027" in read_only
    read_write = " ".join(rclone.command(_request(tmp_path, read_only=False)))
    assert "--read-only" not in read_write
    assert "--uid 4321 --gid 4322 --umask 077" in read_write
    for line in (read_only, read_write):
        assert "--allow-other --default-permissions" in line
        assert f"--cache-dir {tmp_path / '.sync' / 'rclone-mount-0'}" in line


def test_pending_uploads_are_read_from_the_cache(tmp_path: Path) -> None:
    meta = tmp_path / "vfsMeta" / "DEMANAGER" / "data"
    meta.mkdir(parents=True)
    (meta / "done.txt").write_text(json.dumps({"Dirty": False}))
    (meta / "open.txt").write_text(json.dumps({"Dirty": True}))
    (meta / "broken.txt").write_text("{")
    assert fusemounts.pending(tmp_path) == ["DEMANAGER/data/open.txt"]
    assert fusemounts.pending(tmp_path / "none") == []
