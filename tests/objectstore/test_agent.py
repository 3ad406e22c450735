"""The sync agent against a real S3 server (moto on loopback), run as the pod runs it:
a child process that gets its keys from the environment and stops on SIGTERM."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
import pytest

from demanager.objectstore import agent
from demanager.objectstore.client import ObjectStore
from demanager.objectstore.paths import BucketPath
from demanager.objectstore.sync import FolderSync
from tests.objectstore.conftest import KEYS, options


def _s3(endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id=KEYS["access_key"],
                        aws_secret_access_key=KEYS["secret_key"])


def _keys(endpoint: str, bucket: str) -> set[str]:
    listing = _s3(endpoint).list_objects_v2(Bucket=bucket)
    return {o["Key"] for o in listing.get("Contents", [])}


def _config(tmp_path: Path, endpoint: str, bucket: str) -> Path:
    config = {
        "endpoint_url": endpoint,
        "region": "us-east-1",
        "addressing_style": "path",
        "mounts": [
            {"name": "work", "bucket": bucket, "prefix": "work/",
             "folder": str(tmp_path / "work"), "manifest": str(tmp_path / "state/work.json")},
            {"name": "mount-0", "bucket": bucket, "prefix": "data/",
             "folder": str(tmp_path / "data"), "manifest": str(tmp_path / "state/data.json"),
             "read_only": True},
        ],
    }
    path = tmp_path / "sync.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


def _env(secret: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.lower().endswith("_proxy") and not k.startswith("AWS_")}
    env.update({
        "AWS_ACCESS_KEY_ID": KEYS["access_key"],
        "AWS_SECRET_ACCESS_KEY": secret or KEYS["secret_key"],
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
    })
    return env


def _agent(*args: str) -> list[str]:
    return [sys.executable, "-m", "demanager.objectstore.agent", *args]


def test_down_then_run_moves_the_files_and_a_final_sync_follows_sigterm(
    s3_endpoint: str, bucket: str, tmp_path: Path
) -> None:
    s3 = _s3(s3_endpoint)
    s3.put_object(Bucket=bucket, Key="work/a.txt", Body=b"alpha")
    s3.put_object(Bucket=bucket, Key="data/ref.csv", Body=b"1,2")
    config = _config(tmp_path, s3_endpoint, bucket)

    done = subprocess.run(_agent("down", "--config", str(config)), env=_env(),
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "work" / "a.txt").read_bytes() == b"alpha"
    assert (tmp_path / "data" / "ref.csv").read_bytes() == b"1,2"
    assert (tmp_path / "state" / "work.json").is_file(), "the manifest is outside the folder"
    assert not any(p.name.endswith(".json") for p in (tmp_path / "work").iterdir())

    running = subprocess.Popen(_agent("run", "--config", str(config), "--every", "600"),
                               env=_env(), stderr=subprocess.PIPE, text=True)
    try:
        assert running.stderr is not None
        # Its first line comes once the signal handlers are in place.
        first = running.stderr.readline()
        assert "syncing 1 read-write mount(s)" in first, first
        (tmp_path / "work" / "new.txt").write_bytes(b"written in the notebook")
        (tmp_path / "data" / "scratch.txt").write_bytes(b"never uploaded")
        running.send_signal(signal.SIGTERM)
        _, stderr = running.communicate(timeout=60)
    finally:
        if running.poll() is None:
            running.kill()
            running.wait()
    assert running.returncode == 0, stderr
    keys = _keys(s3_endpoint, bucket)
    assert "work/new.txt" in keys
    assert s3.get_object(Bucket=bucket, Key="work/new.txt")["Body"].read() == (
        b"written in the notebook")
    assert not any(k.startswith("data/") and k != "data/ref.csv" for k in keys), (
        "a read-only mount is never uploaded")
    assert KEYS["secret_key"] not in stderr and KEYS["access_key"] not in stderr


def test_down_fails_in_one_line_naming_the_bucket_and_no_key(
    s3_endpoint: str, bucket: str, tmp_path: Path
) -> None:
    config = _config(tmp_path, s3_endpoint, bucket)
    wrong = "wrong-secret-" + "x" * 20
    done = subprocess.run(_agent("down", "--config", str(config)), env=_env(wrong),
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert bucket in lines[0] and "refused" in lines[0]
    assert wrong not in done.stderr and KEYS["access_key"] not in done.stderr


def test_missing_keys_are_named_by_their_variables(
    s3_endpoint: str, bucket: str, tmp_path: Path
) -> None:
    config = _config(tmp_path, s3_endpoint, bucket)
    assert agent.main(["down", "--config", str(config)], environ={}) == 1


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_run_backs_off_while_the_store_is_away_and_says_when_it_is_back(
    s3_endpoint: str, bucket: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder, manifest = tmp_path / "work", tmp_path / "work.json"
    folder.mkdir()
    (folder / "f.txt").write_bytes(b"x")
    where = BucketPath(bucket, "work/")
    away = ObjectStore(options(f"http://127.0.0.1:{_closed_port()}"))
    mount = agent.Mount(
        agent.MountConfig(name="work", bucket=bucket, prefix="work/", folder=folder,
                          manifest=manifest),
        FolderSync(away, where, folder, manifest),
    )
    runner = agent.Runner([mount], every=30, max_backoff=4)
    caplog.set_level(logging.INFO, logger="demanager.sync")

    # A refused connection can take a while on a loaded machine: the delay is bounded
    # by the clock read before and after the failed sync, not rounded from one of them.
    for expected in (1, 2, 4, 4):
        before = time.monotonic()
        assert not runner._up(mount)
        after = time.monotonic()
        assert mount.due - after <= expected <= mount.due - before, "doubling, capped"
    gone = [r for r in caplog.records if "could not be reached" in r.getMessage()]
    assert len(gone) == 1 and bucket in gone[0].getMessage(), "one line when it goes away"

    mount.sync = FolderSync(ObjectStore(options(s3_endpoint)), where, folder, manifest)
    assert runner._up(mount)
    assert any("is back" in r.getMessage() for r in caplog.records)
    assert mount.failures == 0 and "work/f.txt" in _keys(s3_endpoint, bucket)


def test_a_last_sync_that_cannot_reach_the_store_says_so_and_fails(
    bucket: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder, manifest = tmp_path / "work", tmp_path / "work.json"
    folder.mkdir()
    (folder / "f.txt").write_bytes(b"x")
    away = ObjectStore(options(f"http://127.0.0.1:{_closed_port()}"))
    mount = agent.Mount(
        agent.MountConfig(name="work", bucket=bucket, prefix="work/", folder=folder,
                          manifest=manifest),
        FolderSync(away, BucketPath(bucket, "work/"), folder, manifest),
    )
    runner = agent.Runner([mount], every=30, max_backoff=0.1)
    runner.stopping.set()
    assert runner.run() is False
    assert mount.failures == agent.FINAL_ATTEMPTS
    assert any("last sync failed" in r.getMessage() for r in caplog.records)
