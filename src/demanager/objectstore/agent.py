"""The sync agent: a small program that moves a pod's buckets in and out of its folders.

Container backends that cannot run the server's sync themselves (the Kubernetes
backend) run it next to the notebook::

    python -m demanager.objectstore.agent down --config FILE   # once, before the notebook
    python -m demanager.objectstore.agent run --config FILE    # beside it, until SIGTERM

The config (JSON) says where the store is and which bucket directory goes into which
folder; it holds no keys. The keys come from the environment: ``AWS_ACCESS_KEY_ID`` and
``AWS_SECRET_ACCESS_KEY`` for the mounts with ``"credentials": 0`` (the default), and
``AWS_ACCESS_KEY_ID_{n}``/``AWS_SECRET_ACCESS_KEY_{n}`` for ``"credentials": n``, so
that mounts reached with different keys can share one agent. No key is ever printed.

* ``down`` syncs every mount down once; on a failure it prints one line naming the
  bucket and the reason and exits with status 1, so the notebook never starts on a
  folder that is missing its files.
* ``run`` syncs the read-write mounts up every ``--every`` seconds. A failed sync is
  retried with a doubling delay, capped at ``--max-backoff``; one line says when a
  bucket's store goes away and one when it is back. On SIGTERM or SIGINT it syncs up
  once more and exits (status 1 when that last sync failed).

Only the standard library, boto3 and pydantic are imported, so that an image can carry
the agent without the server's dependencies.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from demanager import errors
from demanager.objectstore.client import ObjectStore
from demanager.objectstore.options import S3Options
from demanager.objectstore.paths import BucketPath
from demanager.objectstore.sync import FolderSync

log = logging.getLogger("demanager.sync")

DEFAULT_EVERY = 30.0
DEFAULT_MAX_BACKOFF = 60.0
"""As the server's own sync of host folders retries: 1 s doubling to a minute."""
FIRST_RETRY = 1.0
FINAL_ATTEMPTS = 3
"""Tries of the last sync at shutdown: the grace period is short, so a brief outage is
ridden out but a long one is not waited for."""


class MountConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    bucket: str
    prefix: str = ""
    """The directory inside the bucket, ending with ``/``; empty for the whole bucket."""
    folder: Path
    manifest: Path
    """The sync manifest: outside ``folder``, so that the notebook cannot edit it."""
    read_only: bool = False
    credentials: int = Field(default=0, ge=0)
    """Which key pair of the environment reaches the bucket (see the module's text)."""


class AgentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    endpoint_url: str | None = None
    region: str = "us-east-1"
    addressing_style: Literal["auto", "path", "virtual"] = "path"
    mounts: list[MountConfig]


def key_variables(credentials: int) -> tuple[str, str]:
    """The environment variables that hold key pair ``credentials``."""
    suffix = "" if credentials == 0 else f"_{credentials}"
    return f"AWS_ACCESS_KEY_ID{suffix}", f"AWS_SECRET_ACCESS_KEY{suffix}"


class AgentError(Exception):
    """A fault the agent reports in one line and exits on."""


@dataclass
class Mount:
    config: MountConfig
    sync: FolderSync
    failures: int = 0
    due: float = 0.0
    """When the next up sync is due (monotonic clock)."""


def load_config(path: Path) -> AgentConfig:
    try:
        return AgentConfig.model_validate_json(path.read_bytes())
    except OSError as exc:
        raise AgentError(f"cannot read the config {path}: {exc.strerror}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise AgentError(f"bad config {path}: {where}: {first['msg']}") from None


def build_mounts(config: AgentConfig, environ: Mapping[str, str]) -> list[Mount]:
    stores: dict[int, ObjectStore] = {}
    mounts = []
    for mount in config.mounts:
        if mount.credentials not in stores:
            id_var, secret_var = key_variables(mount.credentials)
            key_id, secret = environ.get(id_var), environ.get(secret_var)
            if not key_id or not secret:
                raise AgentError(
                    f"bucket '{mount.bucket}': {id_var} and {secret_var} must be set"
                )
            options = S3Options(
                endpoint_url=config.endpoint_url, region=config.region,
                addressing_style=config.addressing_style, access_key_id=key_id,
                secret_access_key=SecretStr(secret),
            )
            stores[mount.credentials] = ObjectStore(options)
        mount.folder.mkdir(parents=True, exist_ok=True)
        mount.manifest.parent.mkdir(parents=True, exist_ok=True)
        where = BucketPath(mount.bucket, mount.prefix)
        sync = FolderSync(stores[mount.credentials], where, mount.folder, mount.manifest)
        mounts.append(Mount(mount, sync))
    return mounts


def _reason(mount: MountConfig, exc: Exception) -> str:
    if isinstance(exc, errors.ObjectStorageAccessError):
        return exc.message  # names the bucket already
    if isinstance(exc, OSError):
        return f"bucket '{mount.bucket}': {exc.strerror or type(exc).__name__} ({exc.filename})"
    return f"bucket '{mount.bucket}': {type(exc).__name__}"


def down(mounts: Sequence[Mount]) -> None:
    for mount in mounts:
        try:
            report = mount.sync.down_blocking()
        except (errors.ObjectStorageAccessError, OSError) as exc:
            raise AgentError(_reason(mount.config, exc)) from None
        log.info(
            "bucket '%s' -> %s: %d downloaded, %d deleted, %d kept as copies",
            mount.config.bucket, mount.config.folder, len(report.downloaded),
            len(report.deleted_local), len(report.kept_copies),
        )


class Runner:
    """The ``run`` loop: periodic up syncs with backoff, a last one at the stop signal."""

    def __init__(
        self, mounts: Sequence[Mount], every: float, max_backoff: float,
        stopping: threading.Event | None = None,
    ) -> None:
        self.mounts = [m for m in mounts if not m.config.read_only]
        self.every = every
        self.max_backoff = max_backoff
        self.stopping = stopping or threading.Event()

    def _up(self, mount: Mount) -> bool:
        try:
            report = mount.sync.up_blocking()
        except (errors.ObjectStorageAccessError, OSError) as exc:
            mount.failures += 1
            delay = min(FIRST_RETRY * 2 ** (mount.failures - 1), self.max_backoff)
            if mount.failures == 1:
                log.warning("%s; retrying", _reason(mount.config, exc))
            mount.due = time.monotonic() + delay
            return False
        if mount.failures:
            log.warning("bucket '%s': the object storage is back after %d failed sync(s)",
                        mount.config.bucket, mount.failures)
        mount.failures = 0
        mount.due = time.monotonic() + self.every
        moved = len(report.uploaded) + len(report.deleted_remote)
        if moved:
            log.info("%s -> bucket '%s': %d uploaded, %d deleted, %d kept as copies",
                     mount.config.folder, mount.config.bucket, len(report.uploaded),
                     len(report.deleted_remote), len(report.kept_copies))
        return True

    def run(self) -> bool:
        """Sync until stopped; whether the last sync of every mount succeeded."""
        now = time.monotonic()
        for mount in self.mounts:
            mount.due = now + self.every
        while not self.stopping.is_set():
            due = min((m.due for m in self.mounts), default=time.monotonic() + self.every)
            if self.stopping.wait(max(0.0, due - time.monotonic())):
                break
            for mount in self.mounts:
                if mount.due <= time.monotonic() and not self.stopping.is_set():
                    self._up(mount)
        return self.final()

    def final(self) -> bool:
        ok = True
        for mount in self.mounts:
            for attempt in range(FINAL_ATTEMPTS):
                if self._up(mount):
                    break
                if attempt + 1 < FINAL_ATTEMPTS:
                    time.sleep(min(FIRST_RETRY * 2**attempt, self.max_backoff))
            else:
                log.error("bucket '%s': the last sync failed; what changed since the "
                          "previous one goes with the pod", mount.config.bucket)
                ok = False
        return ok


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demanager.objectstore.agent")
    parser.add_argument("command", choices=("down", "run"))
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--every", type=float, default=DEFAULT_EVERY,
                        help="seconds between up syncs (run)")
    parser.add_argument("--max-backoff", type=float, default=DEFAULT_MAX_BACKOFF,
                        help="longest wait between retries of a failed sync (run)")
    args = parser.parse_args(argv)
    if args.every <= 0 or args.max_backoff <= 0:
        parser.error("--every and --max-backoff must be positive")
    logging.basicConfig(level=logging.INFO, format="demanager sync: %(message)s",
                        stream=sys.stderr)
    # botocore logs nothing useful at INFO, and never should a key reach a log line.
    logging.getLogger("botocore").setLevel(logging.WARNING)
    logging.getLogger("boto3").setLevel(logging.WARNING)
    try:
        config = load_config(args.config)
        mounts = build_mounts(config, os.environ if environ is None else environ)
        if args.command == "down":
            down(mounts)
            return 0
        runner = Runner(mounts, args.every, args.max_backoff)

        signal.signal(signal.SIGTERM, lambda _signum, _frame: runner.stopping.set())
        signal.signal(signal.SIGINT, lambda _signum, _frame: runner.stopping.set())
        log.info("syncing %d read-write mount(s) up every %g s",
                 len(runner.mounts), args.every)
        return 0 if runner.run() else 1
    except (AgentError, errors.ObjectStorageCredentialsMissing) as exc:
        print(f"demanager sync: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
