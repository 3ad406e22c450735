"""One control group per instance, so that stop ends every process it ever started.

A notebook can unset any environment variable, double-fork and ``setsid``; it
cannot leave its cgroup (moving requires write access to the cgroup files, which
are root's). The launcher (``launch.py``) joins the group before it execs
Jupyter, so not even the first instruction of the workload runs outside it.

Two kinds of host are handled:

* cgroup v2 with ``cgroup.kill`` (Linux >= 5.14): one write kills the group;
* cgroup v1 with the freezer controller: freeze, SIGKILL every task, thaw.

Groups live under ``…/demanager/{instance_id}`` below the server's own cgroup
(v2) or the hierarchy's root (v1), so a restarted server finds them by name.
Without a writable hierarchy ``detect()`` returns ``None`` and the backend falls
back to tagging processes through their environment.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

PARENT = "demanager"


@dataclass(frozen=True)
class Mount:
    kind: str
    """``"cgroup2"`` or ``"cgroup"`` (v1)."""
    path: Path
    options: frozenset[str]


def parse_mounts(mountinfo: str) -> list[Mount]:
    """The cgroup mounts of ``/proc/self/mountinfo`` (``man 5 proc``)."""
    mounts = []
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
            continue
        # Octal escapes (\040 for a space) only matter for odd mount points.
        path = Path(fields[4].replace("\\040", " "))
        mounts.append(Mount(tail[0], path, frozenset(tail[2].split(","))))
    return mounts


def parse_own_cgroup(proc_cgroup: str) -> dict[str, str]:
    """``/proc/self/cgroup`` as ``{controller list or "": path}`` (``""`` is v2)."""
    found = {}
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            found[parts[1]] = parts[2]
    return found


def instance_group_name(instance_id: str) -> str:
    """The directory name of an instance's group: the id, refused if it is not a plain name."""
    if not instance_id or "/" in instance_id or instance_id in (".", "..") or "\0" in instance_id:
        raise ValueError(f"not a usable cgroup name: {instance_id!r}")
    return instance_id


class Cgroups:
    """The per-instance groups below one parent directory of one hierarchy."""

    def __init__(self, parent: Path, version: int) -> None:
        self.parent = parent
        self.version = version

    def __repr__(self) -> str:
        return f"cgroup v{self.version} at {self.parent}"

    def path(self, instance_id: str) -> Path:
        return self.parent / instance_group_name(instance_id)

    def create(self, instance_id: str) -> Path:
        """Make (or keep) the instance's group; returns its ``cgroup.procs`` file."""
        group = self.path(instance_id)
        group.mkdir(mode=0o755, exist_ok=True)
        if self.version == 1:
            _write(group / "freezer.state", "THAWED")
        return group / "cgroup.procs"

    def pids(self, instance_id: str) -> list[int]:
        try:
            text = (self.path(instance_id) / "cgroup.procs").read_text()
        except FileNotFoundError:
            return []
        return [int(pid) for pid in text.split()]

    def kill(self, instance_id: str) -> None:
        """SIGKILL every process of the group at once (no fork can outrun it)."""
        group = self.path(instance_id)
        if not group.is_dir():
            return
        if self.version == 2:
            _write(group / "cgroup.kill", "1")
            return
        state = group / "freezer.state"
        _write(state, "FROZEN")
        deadline = time.monotonic() + 5.0
        while state.read_text().strip() != "FROZEN" and time.monotonic() < deadline:
            time.sleep(0.01)
        for pid in self.pids(instance_id):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        # A frozen task dies only once thawed.
        _write(state, "THAWED")

    def remove(self, instance_id: str) -> bool:
        """Remove the group if it is empty; True when it is gone."""
        group = self.path(instance_id)
        try:
            group.rmdir()
        except FileNotFoundError:
            return True
        except OSError:
            return False
        return True


def detect(
    mountinfo: str | None = None, own: str | None = None, probe: bool = True
) -> Cgroups | None:
    """The best writable hierarchy of this host, with its ``demanager`` parent made; or None."""
    try:
        mountinfo = mountinfo if mountinfo is not None else Path("/proc/self/mountinfo").read_text()
        own = own if own is not None else Path("/proc/self/cgroup").read_text()
    except OSError:
        return None
    mounts = parse_mounts(mountinfo)
    paths = parse_own_cgroup(own)
    for candidate in _candidates(mounts, paths):
        if not probe:
            return candidate
        if _usable(candidate):
            return candidate
    return None


def _candidates(mounts: list[Mount], own: dict[str, str]) -> list[Cgroups]:
    found = []
    for mount in mounts:
        if mount.kind == "cgroup2":
            # Below the server's own group: what a delegating service manager allows.
            relative = own.get("", "/").lstrip("/")
            found.append(Cgroups(mount.path / relative / PARENT, 2))
    for mount in mounts:
        if mount.kind == "cgroup" and "freezer" in mount.options:
            found.append(Cgroups(mount.path / PARENT, 1))
    return found


def _usable(candidate: Cgroups) -> bool:
    try:
        candidate.parent.mkdir(mode=0o755, exist_ok=True)
        probe = candidate.parent / f"probe-{os.getpid()}"
        probe.mkdir(exist_ok=True)
        try:
            needed = "cgroup.kill" if candidate.version == 2 else "freezer.state"
            return os.access(probe / needed, os.W_OK) and os.access(probe / "cgroup.procs", os.W_OK)
        finally:
            probe.rmdir()
    except OSError:
        return False


def _write(path: Path, value: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.write_text(value)
