"""Finding a writable cgroup hierarchy, and killing a whole group (on this host's real ones)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from demanager.backends import cgroups
from demanager.backends.process import LAUNCHER

MOUNTINFO = """\
25 30 0:22 / /sys/fs/cgroup rw,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
27 25 0:24 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
28 25 0:25 / /sys/fs/cgroup/freezer rw,nosuid - cgroup cgroup rw,freezer
29 25 0:26 / /proc rw - proc proc rw
"""
OWN = "4:memory:/job/a\n6:freezer:/\n0::/system.slice/demanager.service\n"


def test_cgroup_mounts_are_read_from_mountinfo() -> None:
    mounts = cgroups.parse_mounts(MOUNTINFO)
    assert [(m.kind, str(m.path)) for m in mounts] == [
        ("cgroup2", "/sys/fs/cgroup/unified"),
        ("cgroup", "/sys/fs/cgroup/memory"),
        ("cgroup", "/sys/fs/cgroup/freezer"),
    ]
    assert "freezer" in mounts[2].options


def test_v2_is_preferred_below_the_servers_own_group_then_v1_freezer() -> None:
    found = cgroups.detect(MOUNTINFO, OWN, probe=False)
    assert found is not None and found.version == 2
    assert found.parent == Path("/sys/fs/cgroup/unified/system.slice/demanager.service/demanager")
    v1_only = "\n".join(line for line in MOUNTINFO.splitlines() if "cgroup2" not in line)
    found = cgroups.detect(v1_only, OWN, probe=False)
    assert found is not None and found.version == 1
    assert found.parent == Path("/sys/fs/cgroup/freezer/demanager")


def test_no_usable_hierarchy_means_none() -> None:
    memory_only = "27 25 0:24 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
    assert cgroups.detect(memory_only, OWN, probe=False) is None
    assert cgroups.detect("", "", probe=False) is None


@pytest.mark.parametrize("bad", ["", ".", "..", "a/b", "x\0y"])
def test_group_names_cannot_leave_the_parent(bad: str) -> None:
    with pytest.raises(ValueError):
        cgroups.Cgroups(Path("/sys/fs/cgroup/demanager"), 2).path(bad)


def _real(version: int) -> cgroups.Cgroups:
    mounts = cgroups.parse_mounts(Path("/proc/self/mountinfo").read_text())
    own = cgroups.parse_own_cgroup(Path("/proc/self/cgroup").read_text())
    for candidate in cgroups._candidates(mounts, own):
        if candidate.version == version and cgroups._usable(candidate):
            return candidate
    pytest.skip(f"no writable cgroup v{version} hierarchy here (needs root and the mount)")


@pytest.fixture(params=[2, 1], ids=["v2", "v1-freezer"])
def groups(request: pytest.FixtureRequest) -> Iterator[cgroups.Cgroups]:
    yield _real(request.param)


def test_kill_ends_a_double_forked_process_that_left_its_session(
    groups: cgroups.Cgroups, tmp_path: Path
) -> None:
    instance_id = f"test-{uuid.uuid4().hex}"
    procs = groups.create(instance_id)
    pidfile = tmp_path / "pid"
    script = (
        "import os, sys, time\n"
        "if os.fork(): os._exit(0)\n"
        "os.setsid()\n"
        "if os.fork(): os._exit(0)\n"
        # Written aside and renamed, so the test never reads a file still empty.
        "open(sys.argv[1] + '.tmp', 'w').write(str(os.getpid()))\n"
        "os.replace(sys.argv[1] + '.tmp', sys.argv[1])\n"
        "time.sleep(3600)\n"
    )
    launched = subprocess.run(
        [
            *[sys.executable, "-I", "-S", LAUNCHER, "--cgroup", str(procs), "--"],
            *[sys.executable, "-c", script, str(pidfile)],
        ],
        env={},
        timeout=60,
        check=True,
    )
    assert launched.returncode == 0
    try:
        _wait(pidfile.exists)
        pid = int(pidfile.read_text())
        assert groups.pids(instance_id) == [pid]
        assert not groups.remove(instance_id), "a populated group is kept"
        groups.kill(instance_id)
        _wait(lambda: not groups.pids(instance_id))
        assert groups.remove(instance_id)
        assert not groups.path(instance_id).exists()
        assert groups.remove(instance_id), "removing twice is fine"
    finally:
        for pid in groups.pids(instance_id):
            os.kill(pid, 9)


def _wait(predicate: object, seconds: float = 20.0) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


# --- resource limits: the pure parts ----------------------------------------------------

HYBRID = MOUNTINFO + "30 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"


def test_cpu_limits_are_a_quota_per_period() -> None:
    two = cgroups.Limits(cpus=2)
    assert cgroups.limit_writes("cpu", 2, two) == [("cpu.max", "200000 100000")]
    assert cgroups.limit_writes("cpu", 1, two) == [
        ("cpu.cfs_period_us", "100000"),
        ("cpu.cfs_quota_us", "200000"),
    ]
    assert cgroups.limit_writes("cpu", 2, cgroups.Limits(cpus=0.5)) == [("cpu.max", "50000 100000")]
    assert cgroups.cpu_quota_us(0.001) == cgroups.MIN_CPU_QUOTA_US
    assert cgroups.limit_writes("cpu", 2, cgroups.Limits(memory_bytes=1)) == []


def test_memory_limits_leave_no_swap() -> None:
    gib = cgroups.Limits(memory_bytes=1024**3)
    assert cgroups.limit_writes("memory", 2, gib) == [
        ("memory.max", "1073741824"),
        ("memory.swap.max", "0"),
    ]
    # v1: memory+swap equal to memory; lifted first so a group with other limits takes it.
    assert cgroups.limit_writes("memory", 1, gib) == [
        ("memory.memsw.limit_in_bytes", "-1"),
        ("memory.limit_in_bytes", "1073741824"),
        ("memory.memsw.limit_in_bytes", "1073741824"),
    ]
    assert cgroups.limit_writes("memory", 1, gib, memsw=False) == [
        ("memory.limit_in_bytes", "1073741824")
    ]
    assert cgroups.limit_writes("memory", 2, cgroups.Limits(cpus=2)) == []


def test_oom_kills_are_parsed_from_each_version() -> None:
    events = "low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 0\n"
    assert cgroups.parse_oom_kills(2, events) == 2
    oom_control = "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n"
    assert cgroups.parse_oom_kills(1, oom_control, "7\n") == 1
    old_kernel = "oom_kill_disable 0\nunder_oom 0\n"
    assert cgroups.parse_oom_kills(1, old_kernel, "7\n") == 7
    assert cgroups.parse_oom_kills(1, old_kernel) is None
    assert cgroups.parse_oom_kills(2, "low 0\n", "7") is None


def test_v2_controllers_live_in_the_tracking_group_v1_ones_below_the_servers_own() -> None:
    tracking = cgroups.detect(MOUNTINFO, OWN, probe=False)
    found = cgroups.detect_controllers(tracking, HYBRID, OWN, probe=False)
    assert {name: (c.version, c.parent) for name, c in found.items()} == {
        "cpu": (2, Path("/sys/fs/cgroup/unified/system.slice/demanager.service/demanager")),
        "memory": (2, Path("/sys/fs/cgroup/unified/system.slice/demanager.service/demanager")),
    }
    assert found["cpu"].root == Path("/sys/fs/cgroup/unified")
    v1_only = "\n".join(line for line in HYBRID.splitlines() if "cgroup2" not in line)
    tracking = cgroups.detect(v1_only, OWN, probe=False)
    found = cgroups.detect_controllers(tracking, v1_only, OWN, probe=False)
    assert {name: (c.version, c.parent) for name, c in found.items()} == {
        "cpu": (1, Path("/sys/fs/cgroup/cpu,cpuacct/demanager")),
        "memory": (1, Path("/sys/fs/cgroup/memory/job/a/demanager")),
    }
    assert cgroups.detect_controllers(None, "", "", probe=False) == {}


def test_v2_enables_the_controller_from_the_mount_down(tmp_path: Path) -> None:
    parent = tmp_path / "service" / "demanager"
    parent.mkdir(parents=True)
    for folder in (tmp_path, tmp_path / "service", parent):
        (folder / "cgroup.subtree_control").write_text("")
    cgroups.Controller("memory", parent, 2, tmp_path).enable()
    for folder in (tmp_path, tmp_path / "service", parent):
        assert (folder / "cgroup.subtree_control").read_text() == "+memory"


def test_a_group_gets_its_limit_files_and_reads_its_oom_kills(tmp_path: Path) -> None:
    # A directory tree stands in for the kernel's files.
    memory = cgroups.Controller("memory", tmp_path, 1)
    (tmp_path / "i1").mkdir()
    (tmp_path / "i1" / "memory.memsw.limit_in_bytes").write_text("")
    procs = memory.create("i1", cgroups.Limits(cpus=1, memory_bytes=256 * 1024**2))
    assert procs == tmp_path / "i1" / "cgroup.procs"
    assert (tmp_path / "i1" / "memory.limit_in_bytes").read_text() == str(256 * 1024**2)
    assert (tmp_path / "i1" / "memory.memsw.limit_in_bytes").read_text() == str(256 * 1024**2)
    assert memory.oom_kills("i1") is None
    (tmp_path / "i1" / "memory.oom_control").write_text("oom_kill_disable 0\noom_kill 4\n")
    assert memory.oom_kills("i1") == 4
    cpu = cgroups.Controller("cpu", tmp_path / "cpu", 2)
    (tmp_path / "cpu").mkdir()
    cpu.create("i1", cgroups.Limits(cpus=2, memory_bytes=1))
    assert (tmp_path / "cpu" / "i1" / "cpu.max").read_text() == "200000 100000"
    assert not (tmp_path / "cpu" / "i1" / "memory.max").exists()
    assert cpu.remove("i1") is False  # not empty: kept (the kernel's own files never are)
    assert cpu.remove("gone") is True


def test_affinity_takes_the_least_used_cpus() -> None:
    from demanager.backends.process import pick_cpus

    assert pick_cpus({0, 1, 2, 3}, {}, 2) == (0, 1)
    assert pick_cpus({0, 1, 2, 3}, {"a": (0, 1)}, 2) == (2, 3)
    assert pick_cpus({0, 1, 2, 3}, {"a": (0, 1), "b": (2,)}, 2) == (0, 3)
    assert pick_cpus({0, 1}, {}, 8) == (0, 1), "never more than the host has"
    assert pick_cpus({0, 1}, {}, 0) == (0,), "never fewer than one"


def test_the_oom_warning_names_the_limit() -> None:
    from demanager.backends.process import oom_warning

    reason = oom_warning(1, 1024**3)
    assert reason.code == "ModelArts.6361"
    assert "memory limit (1 GiB)" in reason.message
    assert reason.detail["cause"] == "oom_killed"
    assert "(256 MiB)" in oom_warning(2, 256 * 1024**2).message
    assert "(1.5 GiB)" in oom_warning(2, 3 * 512 * 1024**2).message
