"""The host's CPUs, memory and GPUs: declared in the settings, else detected.

Detection reads what this server itself may use, which is what its notebooks share:
its CPU affinity and its cgroup's ``cpu.max``, the host's ``MemTotal`` and its
cgroup's ``memory.max``, and the GPUs ``nvidia-smi`` lists. Parsing is kept in pure
functions so that each source is tested with sample text.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from demanager.domain.hostfit import Inventory

log = logging.getLogger(__name__)

NVIDIA_SMI_QUERY = ("--query-gpu=index,uuid", "--format=csv,noheader")
NVIDIA_SMI_TIMEOUT_SECONDS = 10.0
CGROUP_ROOT = Path("/sys/fs/cgroup")

_GPU_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9:._-]*$")


def parse_gpu_list(value: str) -> tuple[str, ...] | None:
    """``DEMANAGER_GPUS``: ``auto`` -> None (detect), ``none`` or empty -> (), else the
    comma-separated ids (indices or UUIDs), each once."""
    text = value.strip()
    if text.lower() == "auto":
        return None
    if text.lower() in ("", "none"):
        return ()
    ids = tuple(part.strip() for part in text.split(","))
    bad = [gpu for gpu in ids if not _GPU_ID.match(gpu)]
    if bad:
        raise ValueError(f"not a GPU id: {bad[0]!r} (use indices or UUIDs: 0,1 or GPU-…)")
    if len(set(ids)) != len(ids):
        raise ValueError("a GPU is listed twice")
    return ids


def parse_nvidia_smi(text: str) -> tuple[str, ...]:
    """The UUIDs of ``nvidia-smi --query-gpu=index,uuid --format=csv,noheader``, in index
    order. UUIDs rather than indices: CUDA numbers devices fastest first unless told
    otherwise, nvidia-smi by PCI bus, so an index could name another GPU in the notebook."""
    rows = []
    for line in text.splitlines():
        parts = [part.strip() for part in line.split(",")]
        if len(parts) >= 2 and parts[0].isdigit() and _GPU_ID.match(parts[1]):
            rows.append((int(parts[0]), parts[1]))
    return tuple(uuid for _index, uuid in sorted(rows))


def parse_cpu_max(text: str) -> float | None:
    """cgroup v2 ``cpu.max`` (``"200000 100000"`` = 2 CPUs, ``"max 100000"``: no limit)."""
    parts = text.split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    try:
        return int(parts[0]) / int(parts[1])
    except (ValueError, ZeroDivisionError):
        return None


def parse_memory_max(text: str) -> int | None:
    """cgroup v2 ``memory.max`` in bytes, or None for ``max``."""
    value = text.strip()
    return int(value) if value.isdigit() else None


def parse_meminfo(text: str) -> int | None:
    """``MemTotal`` of ``/proc/meminfo``, in bytes."""
    match = re.search(r"^MemTotal:\s+(\d+)\s*kB", text, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else None


def own_cgroup(proc_self_cgroup: str) -> str | None:
    """This process's cgroup v2 path (the ``0::`` line of ``/proc/self/cgroup``)."""
    for line in proc_self_cgroup.splitlines():
        if line.startswith("0::"):
            return line[3:].strip() or "/"
    return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return None


def _cgroup_files(name: str, root: Path, path: str | None) -> list[str]:
    """``name`` in the cgroup ``path`` (default this process's, cgroup v2) and each of its
    ancestors: the tightest limit wins."""
    if path is None:
        path = own_cgroup(_read(Path("/proc/self/cgroup")) or "")
    if path is None:
        return []
    folder = root / path.lstrip("/")
    found = []
    while True:
        text = _read(folder / name)
        if text is not None:
            found.append(text)
        if folder == root or root not in folder.parents:
            return found
        folder = folder.parent


def detect_cpus(root: Path = CGROUP_ROOT, cgroup: str | None = None) -> float:
    """CPUs this server may run on: its affinity, capped by its cgroups' quotas."""
    count = float(len(os.sched_getaffinity(0)))
    files = _cgroup_files("cpu.max", root, cgroup)
    quotas = [q for q in map(parse_cpu_max, files) if q is not None]
    return min([count, *quotas])


def detect_memory(root: Path = CGROUP_ROOT, cgroup: str | None = None) -> int | None:
    """Bytes of memory: the host's, capped by this server's cgroups' limits."""
    total = parse_meminfo(_read(Path("/proc/meminfo")) or "")
    files = _cgroup_files("memory.max", root, cgroup)
    limits = [m for m in map(parse_memory_max, files) if m]
    candidates = [m for m in [total, *limits] if m is not None]
    return min(candidates) if candidates else None


Runner = Callable[[list[str], float], str]


def _run(argv: list[str], timeout: float) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=True)
    return done.stdout


def detect_gpus(run: Runner = _run) -> tuple[str, ...]:
    """The GPUs ``nvidia-smi`` lists, or none when it is missing or fails (logged)."""
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return ()
    try:
        return parse_nvidia_smi(run([binary, *NVIDIA_SMI_QUERY], NVIDIA_SMI_TIMEOUT_SECONDS))
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("nvidia-smi failed, so no GPU is assigned: %s", exc)
        return ()


def process_inventory(
    *,
    host: str,
    cpus: float | None,
    memory_bytes: int | None,
    gpus: tuple[str, ...] | None,
    cpu_overcommit: float,
) -> Inventory:
    """The process backend's host: each resource as declared, else detected."""
    return Inventory(
        host=host,
        cpus=cpus if cpus is not None else detect_cpus(),
        memory_bytes=memory_bytes if memory_bytes is not None else detect_memory(),
        gpus=gpus if gpus is not None else detect_gpus(),
        cpu_overcommit=cpu_overcommit,
    )


def gpus_only_inventory(*, host: str, gpus: tuple[str, ...] | None) -> Inventory | None:
    """A backend that leaves CPUs and memory to its daemon (Docker) assigns GPUs only
    when they are listed: its daemon may be another machine than this server's."""
    return Inventory(host=host, gpus=gpus) if gpus is not None else None
