"""Who a notebook runs as and what it inherits: the process backend's confinement.

Notebook code is hostile. It must not see the control plane's secrets (the
operator token, the database URL, other instances' tokens), so its environment
is built from an allow-list rather than copied from the server's. When the
server runs as root, each instance also gets an unprivileged system user of its
own (``dm-`` plus 24 hex digits of a digest of its id, the id in the GECOS field), created
on first start and removed on delete: files of the data dir and of other
instances are then out of its reach by plain Unix permissions.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import pwd
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

PASSED_THROUGH = ("LANG", "LANGUAGE", "TZ", "TERM")
"""Server variables a notebook may inherit as they are (plus every ``LC_*``)."""

SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
FALLBACK_TAG = "NOTEBOOK_INSTANCE_TAG"
"""Marks an instance's processes when no cgroup is available (deliberately no ``DEMANAGER_``)."""
FORBIDDEN_PREFIX = "DEMANAGER_"
USER_PREFIX = "dm-"
PROJECT_GROUP_PREFIX = "dmp-"
"""Group of a project's object-storage folders: its instances that mount a bucket are in it."""
NOLOGIN = "/usr/sbin/nologin"
RETRIED_EXIT_CODES = (1, 8, 10)
PROBE_UID = 65534
"""``nobody``: the startup probe checks what an unprivileged uid can reach."""


class SandboxError(RuntimeError):
    """The host cannot confine notebooks as configured; the message names the fix."""


def notebook_env(
    server_env: Mapping[str, str],
    *,
    python: str,
    home: Path,
    extra: Mapping[str, str],
    backend_vars: Mapping[str, str],
) -> dict[str, str]:
    """The whole environment of a notebook server (and so of its kernels).

    Only locale and terminal settings come from the server. The profile's launch
    env (``extra``) comes next, then what the backend itself sets, which wins.
    Nothing named ``DEMANAGER_*`` passes, whatever its source.
    """
    env = {
        key: value
        for key, value in server_env.items()
        if key in PASSED_THROUGH or key.startswith("LC_")
    }
    env["PATH"] = f"{Path(python).parent}:{SYSTEM_PATH}"
    env["HOME"] = str(home)
    env["SHELL"] = "/bin/bash" if Path("/bin/bash").exists() else "/bin/sh"
    env.update(extra)
    env.update(backend_vars)
    return {k: v for k, v in env.items() if not k.upper().startswith(FORBIDDEN_PREFIX)}


def user_name(instance_id: str) -> str:
    """A system user name of 27 characters, fixed for the instance: a digest of the whole
    id (user names stop at 32 characters; an id's uuid alone has 32 hex digits)."""
    return USER_PREFIX + hashlib.sha256(instance_id.encode()).hexdigest()[:24]


def project_group(project_id: str) -> str:
    """The group of one project's object storage (27 characters, fixed for the project)."""
    return PROJECT_GROUP_PREFIX + hashlib.sha256(project_id.encode()).hexdigest()[:24]


def project_dir_name(project_id: str) -> str:
    """The project's folder under the object storage root: its id when that is a plain
    name, else a digest (an id is opaque and could hold ``..`` or a slash)."""
    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", project_id):
        return project_id
    return "_" + hashlib.sha256(project_id.encode()).hexdigest()[:32]


def comment(instance_id: str) -> str:
    return f"demanager instance {instance_id}"


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int


class Users:
    """Creates and removes the per-instance users (root only); one at a time,
    since ``useradd`` locks /etc/passwd and fails rather than waits."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()

    async def ensure(self, instance_id: str) -> Account:
        name = user_name(instance_id)
        async with self._lock:
            entry = _lookup(name)
            if entry is None:
                await _run(
                    "useradd",
                    "--system",
                    "--user-group",
                    "--no-create-home",
                    "--home-dir",
                    "/nonexistent",
                    "--shell",
                    NOLOGIN,
                    "--comment",
                    comment(instance_id),
                    name,
                )
                entry = _lookup(name)
            if entry is None or entry.pw_gecos != comment(instance_id):
                # Never share: a name clash with anything else is a refusal.
                raise SandboxError(f"user {name} exists and does not belong to {instance_id}")
            return Account(name, entry.pw_uid, entry.pw_gid)

    async def ensure_group(self, name: str) -> int:
        async with self._lock:
            gid = _group_id(name)
            if gid is None:
                await _run("groupadd", "--system", "-f", name)
                gid = _group_id(name)
            if gid is None:
                raise SandboxError(f"cannot create group {name}")
            return gid

    async def remove(self, instance_id: str) -> None:
        name = user_name(instance_id)
        async with self._lock:
            entry = _lookup(name)
            if entry is None or entry.pw_gecos != comment(instance_id):
                return
            await _run("userdel", name)


def _lookup(name: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def _group_id(name: str) -> int | None:
    import grp

    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


async def _run(*argv: str) -> None:
    # useradd and friends exit 1 or 10 when another writer (another server) holds the
    # lock on /etc/passwd or /etc/group, and userdel 8 while the user's last processes
    # are still being reaped: all worth a retry.
    delay = 0.05
    for _ in range(8):
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
        )
        _, err = await proc.communicate()
        if proc.returncode == 0:
            return
        if proc.returncode not in RETRIED_EXIT_CODES:
            break
        await asyncio.sleep(delay)
        delay *= 2
    raise SandboxError(f"{argv[0]} failed: {err.decode(errors='replace').strip()}")


def probe(python: str, volumes: Path) -> str | None:
    """Why an unprivileged uid could not run notebooks here, or None if it can.

    Checks that it can execute ``python``, import JupyterLab with it, and reach
    (traverse to) the volumes directory.
    """
    code = (
        "import importlib.util, os, sys\n"
        "if importlib.util.find_spec('jupyterlab') is None:\n"
        "    sys.exit('jupyterlab is not installed')\n"
        "os.stat(sys.argv[1])\n"
    )
    try:
        done = subprocess.run(
            [python, "-I", "-c", code, str(volumes)],
            user=PROBE_UID,
            group=PROBE_UID,
            extra_groups=[],
            cwd="/",
            env={"PATH": SYSTEM_PATH},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"cannot run {python} as an unprivileged user: {exc}"
    if done.returncode != 0:
        lines = done.stderr.decode(errors="replace").strip().splitlines() or ["(no output)"]
        return f"{python}, run as an unprivileged user, failed: {lines[-1]}"
    return None


def is_root() -> bool:
    return os.geteuid() == 0
