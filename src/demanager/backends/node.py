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
from pathlib import Path


def this_node(override: str | None = None) -> str:
    """``override`` (the ``node_id`` setting) if given, else ``{hostname}-{12 hex digits}``,
    stable across restarts of the server on one boot."""
    return override or _detected()


@functools.cache
def _detected() -> str:
    parts = [socket.gethostname()]
    for source in (Path("/proc/sys/kernel/random/boot_id"),):
        try:
            parts.append(source.read_text(encoding="ascii").strip())
        except OSError:
            parts.append("")
    try:
        parts.append(os.readlink("/proc/self/ns/pid"))
    except OSError:
        parts.append("")
    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:12]
    host = socket.gethostname().replace(":", "-")[:40] or "host"
    return f"{host}-{digest}"
