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

The flavor's CPUs and memory are enforced by the ``cpu`` and ``memory``
controllers (``detect_controllers()``): in the instance's own v2 group when the
v2 hierarchy offers them, else in a group of the same name in each v1
hierarchy (below the server's own group there, so the limits of whatever
contains the server still apply). A hybrid host mixes the two: its v2 tree
kills, its v1 trees limit. The launcher joins every one of the groups.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

PARENT = "demanager"
CPU_PERIOD_US = 100_000
MIN_CPU_QUOTA_US = 1_000
"""The kernel refuses quotas under 1 ms."""
RESOURCES = ("cpu", "memory")


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


# --- resource limits ----------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """What one instance may use: CPUs (fractions allowed) and bytes of memory."""

    cpus: float | None = None
    memory_bytes: int | None = None


def cpu_quota_us(cpus: float, period_us: int = CPU_PERIOD_US) -> int:
    """The CFS quota that gives ``cpus`` CPUs' worth of time in each period."""
    return max(MIN_CPU_QUOTA_US, round(cpus * period_us))


def limit_writes(
    controller: str, version: int, limits: Limits, *, memsw: bool = True
) -> list[tuple[str, str]]:
    """The files to write, in order, to put ``limits`` on a group of ``controller``.

    v1 refuses a memory+swap limit below the memory limit (and the reverse), so the
    swap one is lifted first, then both are set: that works on a fresh group and on
    one left with other limits. ``memsw`` is false where swap accounting is off (no
    ``memory.memsw.*`` files).
    """
    if controller == "cpu" and limits.cpus is not None and limits.cpus > 0:
        quota = cpu_quota_us(limits.cpus)
        if version == 2:
            return [("cpu.max", f"{quota} {CPU_PERIOD_US}")]
        return [("cpu.cfs_period_us", str(CPU_PERIOD_US)), ("cpu.cfs_quota_us", str(quota))]
    if controller == "memory" and limits.memory_bytes:
        size = str(limits.memory_bytes)
        if version == 2:
            return [("memory.max", size), ("memory.swap.max", "0")]
        if not memsw:
            return [("memory.limit_in_bytes", size)]
        return [
            ("memory.memsw.limit_in_bytes", "-1"),
            ("memory.limit_in_bytes", size),
            ("memory.memsw.limit_in_bytes", size),
        ]
    return []


def parse_oom_kills(version: int, text: str, failcnt: str | None = None) -> int | None:
    """Processes the kernel killed at the group's memory limit, from ``memory.events``
    (v2) or ``memory.oom_control`` (v1, ``oom_kill`` since Linux 4.13). Older v1
    kernels have no such line: ``memory.failcnt`` (times the limit was hit) stands in,
    an upper bound. None when neither says."""
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill" and value.strip().isdigit():
            return int(value)
    if version == 1 and failcnt is not None and failcnt.strip().isdigit():
        return int(failcnt)
    return None


def own_path(own: dict[str, str], controller: str) -> str:
    """The server's own group in the v1 hierarchy of ``controller`` (``/`` if unknown)."""
    for controllers, path in own.items():
        if controller in controllers.split(","):
            return path
    return "/"


class Controller:
    """The per-instance groups of one resource controller (``cpu`` or ``memory``).

    On v2 they are the instance's tracking groups themselves (the controller is enabled
    for the children of ``parent``); on v1 they are groups of the same name in the
    controller's own hierarchy.
    """

    def __init__(self, name: str, parent: Path, version: int, root: Path | None = None) -> None:
        self.name = name
        self.parent = parent
        self.version = version
        self.root = root
        """v2: the mount point, from which the controller is enabled down to ``parent``."""

    def __repr__(self) -> str:
        return f"{self.name} controller, cgroup v{self.version} at {self.parent}"

    def path(self, instance_id: str) -> Path:
        return self.parent / instance_group_name(instance_id)

    def enable(self) -> None:
        """v2: switch the controller on for the children of each group down to ``parent``
        (refused where a group holds processes; then the probe finds it missing)."""
        if self.version != 2 or self.root is None:
            return
        chain = [self.parent, *self.parent.parents]
        for folder in reversed(chain[: chain.index(self.root) + 1] if self.root in chain else []):
            folder.mkdir(mode=0o755, exist_ok=True)
            with contextlib.suppress(OSError):
                (folder / "cgroup.subtree_control").write_text(f"+{self.name}")

    def create(self, instance_id: str, limits: Limits) -> Path:
        """Make (or keep) the instance's group with ``limits``; its ``cgroup.procs``."""
        group = self.path(instance_id)
        group.mkdir(mode=0o755, exist_ok=True)
        memsw = (group / "memory.memsw.limit_in_bytes").exists()
        for name, value in limit_writes(self.name, self.version, limits, memsw=memsw):
            (group / name).write_text(value)
        return group / "cgroup.procs"

    def oom_kills(self, instance_id: str) -> int | None:
        """Kernel OOM kills in the instance's group so far (memory only)."""
        group = self.path(instance_id)
        try:
            if self.version == 2:
                return parse_oom_kills(2, (group / "memory.events").read_text())
            failcnt = None
            with contextlib.suppress(OSError):
                failcnt = (group / "memory.failcnt").read_text()
            return parse_oom_kills(1, (group / "memory.oom_control").read_text(), failcnt)
        except OSError:
            return None

    def remove(self, instance_id: str) -> bool:
        """Remove the group if it is empty; True when it is gone."""
        try:
            self.path(instance_id).rmdir()
        except FileNotFoundError:
            return True
        except OSError:
            return False
        return True


def detect_controllers(
    tracking: Cgroups | None,
    mountinfo: str | None = None,
    own: str | None = None,
    probe: bool = True,
) -> dict[str, Controller]:
    """The writable ``cpu`` and ``memory`` controllers of this host, by name: in the
    tracking v2 hierarchy when it offers them, else in their v1 hierarchies."""
    try:
        mountinfo = mountinfo if mountinfo is not None else Path("/proc/self/mountinfo").read_text()
        own = own if own is not None else Path("/proc/self/cgroup").read_text()
    except OSError:
        return {}
    mounts = parse_mounts(mountinfo)
    paths = parse_own_cgroup(own)
    found: dict[str, Controller] = {}
    for name in RESOURCES:
        for candidate in _controller_candidates(name, tracking, mounts, paths):
            if not probe or _controller_usable(candidate):
                found[name] = candidate
                break
    return found


def _controller_candidates(
    name: str, tracking: Cgroups | None, mounts: list[Mount], own: dict[str, str]
) -> list[Controller]:
    found = []
    if tracking is not None and tracking.version == 2:
        v2 = [m.path for m in mounts if m.kind == "cgroup2"]
        root = next((path for path in v2 if tracking.parent.is_relative_to(path)), None)
        found.append(Controller(name, tracking.parent, 2, root))
    for mount in mounts:
        if mount.kind == "cgroup" and name in mount.options:
            relative = own_path(own, name).lstrip("/")
            found.append(Controller(name, mount.path / relative / PARENT, 1))
    return found


_LIMIT_FILE = {
    ("cpu", 2): "cpu.max",
    ("memory", 2): "memory.max",
    ("cpu", 1): "cpu.cfs_quota_us",
    ("memory", 1): "memory.limit_in_bytes",
}


def _controller_usable(candidate: Controller) -> bool:
    try:
        candidate.enable()
        candidate.parent.mkdir(mode=0o755, exist_ok=True)
        probe = candidate.parent / f"probe-{candidate.name}-{os.getpid()}"
        probe.mkdir(exist_ok=True)
        try:
            if candidate.version == 2:
                offered = (probe / "cgroup.controllers").read_text().split()
                if candidate.name not in offered:
                    return False
            needed = _LIMIT_FILE[(candidate.name, candidate.version)]
            return os.access(probe / needed, os.W_OK) and os.access(probe / "cgroup.procs", os.W_OK)
        finally:
            probe.rmdir()
    except OSError:
        return False
