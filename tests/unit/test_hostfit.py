"""The host-fit arithmetic: limits, what a flavor takes, whether it fits, which GPUs."""

from __future__ import annotations

import pytest

from demanager.domain.catalog import Resources
from demanager.domain.hostfit import (
    CPUS,
    GPUS,
    MEMORY,
    MIB,
    Inventory,
    amounts,
    fits,
    pick_gpus,
)


def test_limits_count_only_what_the_inventory_declares() -> None:
    full = Inventory("h", cpus=2.5, memory_bytes=3 * 2**30 + 5, gpus=("0", "1"))
    assert full.limits() == {CPUS: 2500, MEMORY: 3072, GPUS: 2}
    assert Inventory("h", gpus=()).limits() == {GPUS: 0}
    assert Inventory("h").limits() == {}
    assert Inventory("h", gpus=()).assigns_gpus and not Inventory("h").assigns_gpus


def test_cpu_overcommit_raises_only_the_cpu_limit() -> None:
    host = Inventory("h", cpus=2, memory_bytes=2**30, gpus=("0",), cpu_overcommit=4)
    assert host.limits() == {CPUS: 8000, MEMORY: 1024, GPUS: 1}


def test_a_flavor_takes_its_need_rounded_up_and_only_of_counted_resources() -> None:
    host = Inventory("h", cpus=8, memory_bytes=2**34, gpus=("0",))
    need = amounts(Resources(cpus=0.3333, memory_bytes=MIB + 1, gpus=1), host)
    assert need == {CPUS: 334, MEMORY: 2, GPUS: 1}
    assert list(need) == [CPUS, MEMORY, GPUS], "always taken in one order"
    # No memory and no GPU: nothing to take of them.
    assert amounts(Resources(cpus=1, memory_bytes=None, gpus=0), host) == {CPUS: 1000}
    # Docker: only GPUs are counted.
    assert amounts(Resources(cpus=8, memory_bytes=2**30, gpus=2), Inventory("d", gpus=())) == {
        GPUS: 2
    }


@pytest.mark.parametrize(
    ("need", "used", "expected"),
    [
        ({CPUS: 1000}, {}, True),
        ({CPUS: 2000}, {CPUS: 0}, True),
        ({CPUS: 2001}, {}, False),
        ({CPUS: 1000, MEMORY: 512}, {CPUS: 1000, MEMORY: 512}, True),
        ({CPUS: 1000, MEMORY: 513}, {CPUS: 1000, MEMORY: 512}, False),
        ({GPUS: 1}, {GPUS: 1}, False),
        ({}, {CPUS: 99999}, True),
    ],
)
def test_fits(need: dict[str, int], used: dict[str, int], expected: bool) -> None:
    assert fits(need, used, {CPUS: 2000, MEMORY: 1024, GPUS: 1}) is expected


def test_gpus_are_picked_whole_in_inventory_order_or_not_at_all() -> None:
    inventory = ("GPU-b", "GPU-a", "GPU-c")
    assert pick_gpus(inventory, set(), 2) == ("GPU-b", "GPU-a")
    assert pick_gpus(inventory, {"GPU-b"}, 2) == ("GPU-a", "GPU-c")
    assert pick_gpus(inventory, {"GPU-b", "GPU-c"}, 2) == ()
    assert pick_gpus(inventory, {"gone"}, 3) == inventory
