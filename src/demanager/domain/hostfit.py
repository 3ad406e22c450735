"""What one host can hold, and what each instance takes of it.

A backend that runs instances on one host it knows (the process backend; the Docker
backend for GPUs it is told about) declares an ``Inventory``: the host's CPUs,
memory and GPUs. The store counts what instances holding resources take of each
(``amounts``) in counters of their own and refuses a status write that would pass
``limits``, exactly as it refuses one that would pass a flavor's capacity. A backend
whose scheduler places workloads itself (Kubernetes) declares none.

Units are whole numbers so the counters stay integer columns: milli-CPUs and MiB,
each flavor's need rounded up, so rounding never lets the host be overpromised.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from demanager.domain.catalog import Resources

MIB = 2**20

CPUS = "cpus"
MEMORY = "memory"
GPUS = "gpus"
RESOURCES = (CPUS, MEMORY, GPUS)
"""The order in which a write takes the host's counters, after capacity; every writer
takes them in this order, so two never wait for each other's."""


@dataclass(frozen=True)
class Inventory:
    """A host's resources as demanager may promise them; ``None`` leaves one uncounted."""

    host: str
    """Names the host in GPU assignments and counters: replicas sharing it share them."""
    cpus: float | None = None
    memory_bytes: int | None = None
    gpus: tuple[str, ...] | None = None
    """The ids of the GPUs instances may be given, whole (``CUDA_VISIBLE_DEVICES``
    values); ``()`` a host without GPUs; ``None``: GPUs are not assigned here."""
    cpu_overcommit: float = 1.0
    """CPU is compressible (a busy host slows down, nothing is killed): flavors may
    together ask for this many times the host's CPUs. Memory and GPUs never are."""

    def limits(self) -> dict[str, int]:
        """Counter limits by resource, for the resources counted."""
        found: dict[str, int] = {}
        if self.cpus is not None:
            found[CPUS] = math.floor(self.cpus * self.cpu_overcommit * 1000)
        if self.memory_bytes is not None:
            found[MEMORY] = self.memory_bytes // MIB
        if self.gpus is not None:
            found[GPUS] = len(self.gpus)
        return found

    @property
    def assigns_gpus(self) -> bool:
        return self.gpus is not None


def amounts(resources: Resources, inventory: Inventory) -> dict[str, int]:
    """What one instance of a flavor with ``resources`` takes of each counted resource,
    in ``RESOURCES`` order; zero amounts are left out (nothing to take)."""
    need = {
        CPUS: math.ceil(resources.cpus * 1000),
        MEMORY: math.ceil((resources.memory_bytes or 0) / MIB),
        GPUS: resources.gpus,
    }
    limits = inventory.limits()
    return {name: need[name] for name in RESOURCES if name in limits and need[name] > 0}


def fits(need: Mapping[str, int], used: Mapping[str, int], limits: Mapping[str, int]) -> bool:
    """Whether ``need`` fits beside what is ``used`` of each resource."""
    return all(used.get(name, 0) + n <= limits[name] for name, n in need.items())


def pick_gpus(inventory: tuple[str, ...], taken: set[str], count: int) -> tuple[str, ...]:
    """``count`` free GPUs, in inventory order (so that concurrent pickers, serialised by
    the counter, meet the same order), or ``()`` when too few are free."""
    free = [gpu for gpu in inventory if gpu not in taken]
    return tuple(free[:count]) if len(free) >= count else ()
