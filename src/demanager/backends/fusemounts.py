"""Whole buckets (``obsfs``) as FUSE mounts made by rclone on the server's host, for the
process backend (``objectmounts.py`` decides which mount is one and keeps their state).

* ``choose`` decides, once at server start, between FUSE mounts and synced copies
  (``DEMANAGER_S3__OBSFS_MOUNT``): FUSE needs root, rclone, fusermount and a
  ``/dev/fuse`` that opens;
* ``Rclone.mount`` runs one ``rclone mount`` per bucket in a session of its own, so that
  it outlives a crash or restart of the server; the S3 keys are in its environment only
  (``/proc/{pid}/environ`` is root's alone), never on its command line;
* writes go to a write cache in the instance's root-only ``.sync`` folder and are
  uploaded ``WRITE_BACK_SECONDS`` after the file is closed. rclone does not wait for
  those uploads when it is unmounted: ``pending`` reads the cache's own bookkeeping
  (``vfsMeta``: one JSON file per cached file, ``Dirty`` until it is uploaded), and the
  caller unmounts only once nothing is pending. What an rclone that died leaves in the
  cache is uploaded by the next rclone started on the same cache folder.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil

from demanager.backends.sandbox import SYSTEM_PATH, Account
from demanager.objectstore.options import S3Options

log = logging.getLogger(__name__)

FUSE_DEVICE = "/dev/fuse"
REMOTE = "DEMANAGER"
"""The rclone remote, defined by ``RCLONE_CONFIG_DEMANAGER_*`` variables alone."""
WRITE_BACK_SECONDS = 2
"""A closed file is uploaded this long after its last close (rclone's ``--vfs-write-back``)."""
MOUNT_SECONDS = 30.0
"""How long a start waits for a mount to answer."""
EXIT_SECONDS = 10.0
"""How long an unmount waits for rclone to exit before it is killed."""
PASSED_THROUGH = (
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "TZ",
)
"""Server variables rclone inherits: how the server itself reaches the store."""
_STARTED: dict[int, subprocess.Popen[bytes]] = {}
"""The rclones this server started, by pid: they outlive it on purpose, and while it
runs it collects their exit (else each would stay a zombie)."""


class FuseUnavailable(RuntimeError):
    """FUSE mounts were demanded (``DEMANAGER_S3__OBSFS_MOUNT=fuse``) and cannot be made."""


class MountFailed(RuntimeError):
    """rclone could not mount a bucket; the message is its reason."""


@dataclass(frozen=True)
class FuseChoice:
    rclone: str | None
    """The rclone executable when obsfs buckets are FUSE mounts; None: synced copies."""
    why: str


def choose(options: S3Options) -> FuseChoice:
    """FUSE mounts or synced copies for ``obsfs``, and why. Raises ``FuseUnavailable`` when
    ``fuse`` is demanded and a mount cannot be made here."""
    if options.obsfs_mount == "sync":
        return FuseChoice(None, "synced copies, as DEMANAGER_S3__OBSFS_MOUNT=sync asks")
    rclone, problem = _probe(options.rclone)
    if rclone is not None:
        return FuseChoice(rclone, f"FUSE mounts by {rclone} ({_version(rclone)})")
    if options.obsfs_mount == "fuse":
        raise FuseUnavailable(
            f"DEMANAGER_S3__OBSFS_MOUNT=fuse, but {problem}: install rclone and fuse3 "
            "(apt-get install rclone fuse3), run as root with /dev/fuse, or set "
            "DEMANAGER_S3__OBSFS_MOUNT=auto or sync"
        )
    return FuseChoice(None, f"synced copies, since {problem}")


def _probe(rclone: str) -> tuple[str | None, str]:
    if os.geteuid() != 0:
        return None, "the server does not run as root"
    found = shutil.which(rclone)
    if found is None:
        return None, f"rclone ({rclone!r}, DEMANAGER_S3__RCLONE) is not found"
    if fusermount() is None:
        return None, "neither fusermount3 nor fusermount is on PATH"
    try:
        os.close(os.open(FUSE_DEVICE, os.O_RDWR))
    except OSError as exc:
        return None, f"{FUSE_DEVICE} cannot be opened ({exc.strerror})"
    return found, ""


def _version(rclone: str) -> str:
    try:
        said = subprocess.run(
            [rclone, "version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "version unknown"
    return said.splitlines()[0].strip() if said else "version unknown"


def fusermount() -> str | None:
    return shutil.which("fusermount3") or shutil.which("fusermount")


@dataclass(frozen=True)
class MountRequest:
    bucket: str
    folder: Path
    """The mount point, in the instance's folder (root:instance-gid 0710)."""
    state_dir: Path
    """Root-only: rclone's write cache and log go here."""
    read_only: bool
    owner: Account
    options: S3Options
    """Where the bucket is and the keys that reach it."""

    @staticmethod
    def cache_dir_of(state_dir: Path, name: str) -> Path:
        """rclone's cache of the mount ``name``: kept across mounts, so that what one
        rclone did not upload, the next one does."""
        return state_dir / f"rclone-{name}"

    @property
    def cache_dir(self) -> Path:
        return self.cache_dir_of(self.state_dir, self.folder.name)

    @property
    def log_file(self) -> Path:
        return _log_file(self.state_dir, self.folder.name)


def _log_file(state_dir: Path, name: str) -> Path:
    return state_dir / f"rclone-{name}.log"


class Rclone:
    def __init__(self, executable: str) -> None:
        self._executable = executable

    def command(self, request: MountRequest) -> list[str]:
        """``rclone mount``'s command line: no key, nothing secret."""
        owner = request.owner
        if request.read_only:
            # Root's, readable by the instance's group: the kernel refuses a write before
            # rclone is asked, and the instance's uid could not change the modes back.
            ids, umask = ["--uid", "0", "--gid", str(owner.gid)], "027"
        else:
            ids, umask = ["--uid", str(owner.uid), "--gid", str(owner.gid)], "077"
        dir_cache = max(1, round(request.options.sync_seconds))
        return [
            self._executable, "mount", f"{REMOTE}:{request.bucket}", str(request.folder),
            # The kernel checks every access against these owners and modes: without
            # it, allow-other would let any uid that reaches the folder read and write.
            # (rclone runs as root, so /etc/fuse.conf needs no user_allow_other.)
            "--allow-other", "--default-permissions", *ids, "--umask", umask,
            "--vfs-cache-mode", "writes", "--cache-dir", str(request.cache_dir),
            "--vfs-write-back", f"{WRITE_BACK_SECONDS}s",
            "--dir-cache-time", f"{dir_cache}s",
            "--log-level", "NOTICE",
            *(["--read-only"] if request.read_only else []),
        ]

    def mount(self, request: MountRequest) -> int:
        """Mount the bucket and wait until the mount answers; rclone's pid. Raises
        ``MountFailed`` with rclone's reason (the mount is then gone)."""
        request.cache_dir.mkdir(mode=0o700, exist_ok=True)
        env = rclone_env(request.options, os.environ, home=request.cache_dir)
        fd = os.open(request.log_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            proc = subprocess.Popen(
                self.command(request),
                cwd="/",
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=fd,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            raise MountFailed(f"cannot run {self._executable}: {exc}") from exc
        finally:
            os.close(fd)
        _STARTED[proc.pid] = proc
        deadline = time.monotonic() + MOUNT_SECONDS
        while not os.path.ismount(request.folder):
            if proc.poll() is not None:
                _STARTED.pop(proc.pid, None)
                unmount(request.folder, None)
                said = _last_words(request.log_file)
                raise MountFailed(said or f"rclone exited ({proc.returncode})")
            if time.monotonic() > deadline:
                proc.terminate()
                unmount(request.folder, proc.pid)
                said = _last_words(request.log_file)
                raise MountFailed(f"no mount after {MOUNT_SECONDS:g} s; {said}")
            time.sleep(0.05)
        return proc.pid


def rclone_env(options: S3Options, server_env: Mapping[str, str], *, home: Path) -> dict[str, str]:
    """rclone's whole environment: the remote, keys included, and how to reach it."""
    remote = f"RCLONE_CONFIG_{REMOTE}_"
    env = {k: v for k, v in server_env.items() if k in PASSED_THROUGH}
    env.update(
        {
            "PATH": SYSTEM_PATH,
            "HOME": str(home),
            # No configuration file: the remote is these variables and nothing else.
            "RCLONE_CONFIG": os.devnull,
            f"{remote}TYPE": "s3",
            f"{remote}PROVIDER": "Other" if options.endpoint_url else "AWS",
            f"{remote}REGION": options.region,
            f"{remote}ENV_AUTH": "false",
            f"{remote}FORCE_PATH_STYLE": str(options.addressing_style != "virtual").lower(),
            # The bucket exists (checked before): never try to create it.
            f"{remote}NO_CHECK_BUCKET": "true",
        }
    )
    if options.endpoint_url:
        env[f"{remote}ENDPOINT"] = options.endpoint_url
    if options.access_key_id and options.secret_access_key is not None:
        env[f"{remote}ACCESS_KEY_ID"] = options.access_key_id
        env[f"{remote}SECRET_ACCESS_KEY"] = options.secret_access_key.get_secret_value()
    return env


def last_words(state_dir: Path, name: str) -> str:
    """The last line the rclone of the mount ``name`` logged."""
    return _last_words(_log_file(state_dir, name))


def _last_words(log_file: Path) -> str:
    """The last line rclone logged, without its timestamp."""
    with contextlib.suppress(OSError):
        lines = [line.strip() for line in log_file.read_text("utf-8", "replace").splitlines()]
        lines = [line for line in lines if line]
        if lines:
            last = lines[-1]
            # "2006/01/02 15:04:05 LEVEL : message"
            parts = last.split(" ", 2)
            return parts[2] if len(parts) == 3 and parts[0].count("/") == 2 else last
    return ""


# --- what runs, what is mounted, what is pending ---------------------------------------


def mount_points() -> set[str]:
    """Every mount point of this mount namespace."""
    found = set()
    with contextlib.suppress(OSError), open("/proc/self/mounts", encoding="utf-8") as table:
        for line in table:
            fields = line.split(" ")
            if len(fields) > 1:
                # Spaces, tabs, newlines and backslashes are octal escapes there.
                found.add(fields[1].encode().decode("unicode_escape"))
    return found


def _canonical(folder: Path) -> str:
    """``folder`` as the mount table names it. Its parent is resolved, not the folder
    itself: a stat of a mount point waits for its rclone, which may hang."""
    return os.path.join(os.path.realpath(folder.parent), folder.name)


def mounted_under(top: Path) -> list[Path]:
    """The mount points at or below ``top``, deepest first."""
    root = os.path.realpath(top)
    inside = [p for p in mount_points() if p == root or p.startswith(root + os.sep)]
    return [Path(p) for p in sorted(inside, key=len, reverse=True)]


def running(folder: Path, pid: int) -> bool:
    """Whether ``pid`` is still the rclone of ``folder`` and ``folder`` is mounted. Reads
    /proc only: a stat of the mount itself could hang with its rclone."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE or str(folder) not in proc.cmdline():
            _reap(pid)
            return False
    except psutil.Error:
        return False
    return _canonical(folder) in mount_points()


def pending(cache_dir: Path) -> list[str]:
    """The files rclone has not uploaded yet (its cache's ``Dirty`` marks)."""
    meta = cache_dir / "vfsMeta"
    found = []
    for parent, _dirs, files in os.walk(meta):
        for name in files:
            path = os.path.join(parent, name)
            try:
                with open(path, encoding="utf-8") as record:
                    dirty = bool(json.load(record).get("Dirty"))
            except (OSError, ValueError, AttributeError):
                continue
            if dirty:
                found.append(os.path.relpath(path, meta))
    return found


def unmount(folder: Path, pid: int | None) -> None:
    """Unmount ``folder`` (lazily if it is busy) and wait for its rclone to exit, killing
    it past ``EXIT_SECONDS``. What rclone has not uploaded stays in its cache."""
    if _canonical(folder) in mount_points():
        tool = fusermount()
        attempts = [[tool, "-u"], [tool, "-u", "-z"]] if tool else []
        attempts.append(["umount", "-l"])
        for command in attempts:
            done = subprocess.run(
                [*command, str(folder)], capture_output=True, text=True, check=False
            )
            if done.returncode == 0:
                break
            log.warning("%s %s: %s", " ".join(command), folder, done.stderr.strip())
    if pid is None:
        return
    started = _STARTED.pop(pid, None)
    if started is not None:
        try:
            started.wait(EXIT_SECONDS)
        except subprocess.TimeoutExpired:
            log.warning("rclone %d of %s did not exit after its unmount; killing it", pid, folder)
            started.kill()
            started.wait()
        return
    rclone = _rclone_of(folder, pid)
    if rclone is None:
        return
    try:
        rclone.wait(EXIT_SECONDS)
    except psutil.TimeoutExpired:
        log.warning("rclone %d of %s did not exit after its unmount; killing it", pid, folder)
        with contextlib.suppress(psutil.Error):
            rclone.send_signal(signal.SIGKILL)
            rclone.wait(EXIT_SECONDS)
    except psutil.Error:
        pass


def _reap(pid: int) -> None:
    """Collect an rclone this server started, if it exited."""
    started = _STARTED.get(pid)
    if started is not None and started.poll() is not None:
        del _STARTED[pid]


def _rclone_of(folder: Path, pid: int) -> psutil.Process | None:
    """The process ``pid`` if it is the rclone of ``folder`` (a pid may be reused)."""
    try:
        proc = psutil.Process(pid)
        return proc if str(folder) in proc.cmdline() else None
    except psutil.Error:
        return None
