"""Which node this process runs on, in the sense that matters to a backend: which
processes it can see and signal.

A host name is not enough: containers that share one (or a cloned image) would take
each other for the same machine. The kernel's boot id and the inode of the process's
PID namespace tell them apart, and two processes with the same pair can in fact see
each other's PIDs.
"""

from __future__ import annotations

import functools
import hashlib
import os
import socket
from collections.abc import Callable
from pathlib import Path


def this_node(override: str | None = None) -> str:
    """``override`` (the ``node_id`` setting) if given, else ``{hostname}-{12 hex digits}``,
    stable across restarts of the server on one boot."""
    return override or _detected()


@functools.cache
def _detected() -> str:
    hostname = socket.gethostname()
    parts = [hostname, _read(Path("/proc/sys/kernel/random/boot_id").read_text)]
    parts.append(_read(lambda: os.readlink("/proc/self/ns/pid")))
    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:12]
    return f"{hostname.replace(':', '-')[:40] or 'host'}-{digest}"


def _read(source: Callable[[], str]) -> str:
    try:
        return source().strip()
    except OSError:
        return ""


def start_ticks(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot (field 22 of /proc/<pid>/stat):
    unlike psutil's create_time, derived from the wall clock, no clock change moves it.
    With the PID it names one process for good: a reused PID starts at another tick."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rpartition(b")")[2].split()
        return int(fields[19])  # fields after the command name start at field 3
    except (OSError, IndexError, ValueError):
        return None


def replica_name(node: str, nonce: str) -> str:
    """A running server's name as a lease owner: ``{node}:{pid}:{start ticks}:{nonce}``."""
    pid = os.getpid()
    return f"{node[:60]}:{pid}:{start_ticks(pid) or 0}:{nonce}"


def is_dead_neighbour(owner: str, node: str) -> bool:
    """``owner`` (a ``replica_name``) ran on ``node``, this process's node, and its process
    is gone: no process with its PID, or one that started at another tick (the PID was
    reused). Owners of other nodes are never judged: their PIDs mean nothing here."""
    parts = owner.split(":")
    if len(parts) != 4 or parts[0] != node[:60]:
        return False
    try:
        pid, ticks = int(parts[1]), int(parts[2])
    except ValueError:
        return False
    if pid == os.getpid():
        return False
    now = start_ticks(pid)
    return now is None or (ticks != 0 and now != ticks)
