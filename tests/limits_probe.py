"""Code that runs inside a workload and says how many CPUs it may use: the smallest of
its CPU affinity and its cgroup CPU quota (v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``).
Standard library only: it runs as a file or is sent to a kernel as text."""

from __future__ import annotations

VISIBLE_CPUS = r'''
import os


def visible_cpus():
    best = float(len(os.sched_getaffinity(0)))
    own = {}
    for line in open("/proc/self/cgroup"):
        _, controllers, path = line.rstrip("\n").split(":", 2)
        own[controllers] = path
    for line in open("/proc/self/mountinfo"):
        left, _, right = line.partition(" - ")
        tail = right.split()
        if len(tail) < 3:
            continue
        mount = left.split()[4]
        if tail[0] == "cgroup2":
            files = [os.path.join(mount, own.get("", "/").lstrip("/"), "cpu.max")]
        elif tail[0] == "cgroup" and "cpu" in tail[2].split(","):
            key = next((k for k in own if "cpu" in k.split(",")), "")
            group = os.path.join(mount, own.get(key, "/").lstrip("/"))
            files = [os.path.join(group, f"cpu.cfs_{part}_us") for part in ("quota", "period")]
        else:
            continue
        try:
            words = " ".join(open(name).read() for name in files).split()
        except OSError:
            continue
        if words[0] not in ("max", "-1"):
            best = min(best, int(words[0]) / int(words[1]))
    return best
'''
