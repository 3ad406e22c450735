"""Object storage sync: FolderSync against boto3's transfer manager, on the same data.

Starts its own S3 server (moto on loopback, signed requests with an IAM user's key)
and times, in one run, many small files and one big file, each way:

* out: folder -> bucket, ``FolderSync.up_blocking`` into an empty prefix;
* in: bucket -> folder, ``FolderSync.down_blocking`` into an empty folder.

The baseline does the same work as ``aws s3 sync``: list the prefix, walk the folder,
then move every file through one s3transfer manager (10 threads, 8 MiB parts, the
CLI's defaults). Each side gets a fresh prefix or folder; the in-cases of both sides
read the same objects. The ratio is demanager / baseline (target <= 1.2).

    .venv/bin/python bench/storage.py [--files 1000] [--file-kb 4] [--big-mb 1024] [--rounds 1]
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder comes first on the import path, where
# ``bench/queue.py`` would hide the standard library's ``queue`` (which
# concurrent.futures and s3transfer import). Python puts it there resolved.
sys.path.remove(str(Path(__file__).resolve().parent))

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from importlib.metadata import version
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig, create_transfer_manager
from botocore.config import Config

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.s3server import LOOPBACK_ONLY, MotoServer

from demanager.objectstore.client import ObjectStore
from demanager.objectstore.options import S3Options
from demanager.objectstore.paths import BucketPath
from demanager.objectstore.sync import FolderSync, scan

BUCKET = "bench"
MIB = 1024 * 1024
TARGET = 1.2
BASELINE_CONFIG = TransferConfig(
    multipart_threshold=8 * MIB, multipart_chunksize=8 * MIB, max_concurrency=10
)
"""What ``aws s3 sync`` uses unless configured otherwise."""


def _loopback_only() -> None:
    # Keep boto away from any proxy and any credentials of the host.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        os.environ.pop(name, None)
    os.environ.update(LOOPBACK_ONLY)


def make_small(folder: Path, files: int, size: int) -> None:
    """``files`` random files of ``size`` bytes, spread over ten sub-folders."""
    for i in range(files):
        path = folder / f"d{i % 10}" / f"f{i:05d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))


def make_big(folder: Path, size: int) -> None:
    folder.mkdir(parents=True)
    with (folder / "big.bin").open("wb") as out:
        left = size
        while left:
            chunk = min(left, 8 * MIB)
            out.write(os.urandom(chunk))
            left -= chunk


def _tally(folder: Path) -> tuple[int, int]:
    entries = scan(folder).values()
    return len(entries), sum(e.size for e in entries)


def _remote_tally(s3: Any, prefix: str) -> tuple[int, int]:
    count = size = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        for obj in page.get("Contents", []):
            count, size = count + 1, size + obj["Size"]
    return count, size


def _empty(s3: Any, prefix: str) -> None:
    """Drop a prefix's objects, so that moto, which holds them, frees their memory."""
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=BUCKET, Delete={"Objects": keys, "Quiet": True})


def baseline_up(s3: Any, folder: Path, prefix: str) -> None:
    # Listed, as a sync compares with what the prefix holds; it is empty here.
    _remote_tally(s3, prefix)
    with create_transfer_manager(s3, BASELINE_CONFIG) as manager:
        futures = [
            manager.upload(str(folder / rel), BUCKET, prefix + rel)
            for rel in scan(folder)
        ]
        for future in futures:
            future.result()


def baseline_down(s3: Any, prefix: str, folder: Path) -> None:
    scan(folder)  # compared with, as a sync does; empty here
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        keys += [obj["Key"] for obj in page.get("Contents", [])]
    with create_transfer_manager(s3, BASELINE_CONFIG) as manager:
        futures = []
        for key in keys:
            target = folder / key[len(prefix):]
            target.parent.mkdir(parents=True, exist_ok=True)
            futures.append(manager.download(BUCKET, key, str(target)))
        for future in futures:
            future.result()


def _timed(work: Callable[[], object]) -> float:
    began = time.perf_counter()
    work()
    return time.perf_counter() - began


def run_case(
    name: str, source: Path, work: Path, store: ObjectStore, s3: Any, rounds: int
) -> list[tuple[str, float, float]]:
    """Time out and in for one data set; medians over ``rounds``, sides alternating."""
    expected = _tally(source)
    times: dict[str, list[float]] = {"dm-out": [], "base-out": [], "dm-in": [], "base-in": []}
    for r in range(rounds):
        dm_out, base_out = f"{name}/{r}/dm-out/", f"{name}/{r}/base-out/"
        manifest = work / f"{name}-{r}-up.json"
        sync_up = FolderSync(store, BucketPath(BUCKET, dm_out), source, manifest)
        sides_out: list[tuple[str, Callable[[], object]]] = [
            ("dm-out", sync_up.up_blocking),
            ("base-out", partial(baseline_up, s3, source, base_out)),
        ]
        # The in-cases read what the baseline wrote (the same objects for both sides).
        dm_in, base_in = work / f"{name}-{r}-dm-in", work / f"{name}-{r}-base-in"
        dm_in.mkdir()
        base_in.mkdir()
        sync_down = FolderSync(
            store, BucketPath(BUCKET, base_out), dm_in, work / f"{name}-{r}-down.json"
        )
        sides_in: list[tuple[str, Callable[[], object]]] = [
            ("dm-in", sync_down.down_blocking),
            ("base-in", partial(baseline_down, s3, base_out, base_in)),
        ]
        if r % 2:  # alternate who goes first, so drift hits both sides alike
            sides_out.reverse()
            sides_in.reverse()
        for side, work_fn in sides_out:
            times[side].append(_timed(work_fn))
        for prefix in (dm_out, base_out):
            if _remote_tally(s3, prefix) != expected:
                raise SystemExit(f"{name}: {prefix} does not hold the data set")
        for side, work_fn in sides_in:
            times[side].append(_timed(work_fn))
        for folder in (dm_in, base_in):
            if _tally(folder) != expected:
                raise SystemExit(f"{name}: {folder.name} does not hold the data set")
            shutil.rmtree(folder)
        _empty(s3, f"{name}/{r}/")
    med = {side: statistics.median(values) for side, values in times.items()}
    return [
        (f"{name} out (folder -> bucket)", med["dm-out"], med["base-out"]),
        (f"{name} in  (bucket -> folder)", med["dm-in"], med["base-in"]),
    ]


def _clients(server: MotoServer) -> tuple[ObjectStore, Any]:
    options = S3Options.model_validate(
        {
            "endpoint_url": server.endpoint,
            "access_key_id": server.access_key,
            "secret_access_key": server.secret_key,
            "addressing_style": "path",
        }
    )
    s3 = boto3.session.Session().client(
        "s3",
        endpoint_url=server.endpoint,
        region_name="us-east-1",
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        config=Config(s3={"addressing_style": "path"}),
    )
    return ObjectStore(options), s3


def _size(n: int) -> str:
    return f"{n // MIB} MiB" if n >= MIB else f"{n // 1024} KiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000, help="small files (1000)")
    parser.add_argument("--file-kb", type=int, default=4, help="size of a small file (4 KiB)")
    parser.add_argument("--big-mb", type=int, default=1024, help="size of the big file (1024 MiB)")
    parser.add_argument("--rounds", type=int, default=1, help="medians over this many rounds")
    args = parser.parse_args()
    _loopback_only()
    small, big = args.files * args.file_kb * 1024, args.big_mb * MIB
    with tempfile.TemporaryDirectory(prefix="dm-bench-storage-") as tmp:
        root = Path(tmp)
        make_small(root / "small", args.files, args.file_kb * 1024)
        make_big(root / "big", big)
        rows = []
        server = MotoServer().start()
        try:
            store, s3 = _clients(server)
            s3.create_bucket(Bucket=BUCKET)
            rows += run_case(
                f"{args.files} x {_size(small // args.files)}", root / "small", root, store, s3,
                args.rounds,
            )
            rows += run_case(f"1 x {_size(big)}", root / "big", root, store, s3, args.rounds)
        finally:
            server.stop()
    print(
        f"{os.cpu_count()} cores ({platform.processor() or platform.machine()}), "
        f"Python {platform.python_version()}, boto3 {version('boto3')}, "
        f"s3transfer {version('s3transfer')}, moto {version('moto')} (server mode, loopback); "
        f"median of {args.rounds} round(s)"
    )
    print(f"{'case':<36}{'demanager':>11}{'baseline':>11}{'ratio':>8}  target")
    for case, dm, base in rows:
        ratio = dm / base
        mark = "ok" if ratio <= TARGET else "over"
        print(f"{case:<36}{dm:>10.3f}s{base:>10.3f}s{ratio:>8.2f}  <= {TARGET:.1f} {mark}")


if __name__ == "__main__":
    main()
