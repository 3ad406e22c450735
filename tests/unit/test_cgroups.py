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
        "open(sys.argv[1], 'w').write(str(os.getpid()))\n"
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
