"""The catalog refuses what it cannot use, naming the entry, and reads flavors' sizes."""

from __future__ import annotations

from typing import Any

import pytest

from demanager.domain.catalog import Catalog, CatalogError, parse_bytes


def _catalog(profile: dict[str, Any], flavor: dict[str, Any] | None = None) -> Catalog:
    return Catalog.from_mapping({
        "profiles": [{"id": "p", "flavor_type": "CPU", **profile}],
        "flavors": [flavor or {"name": "f", "type": "CPU", "params": {"CPU": 2}}],
    })


def test_launch_sections_are_kept_for_each_backend_to_read() -> None:
    catalog = _catalog({"launch": {"process": {"command": ["x"]}, "docker": {"port": 9}}})
    assert catalog.profiles["p"].launch == {"process": {"command": ["x"]}, "docker": {"port": 9}}
    assert _catalog({}).profiles["p"].launch == {}


def test_a_catalog_of_the_previous_layout_is_refused_with_the_new_place() -> None:
    with pytest.raises(CatalogError, match=r"'process' moved under 'launch'"):
        _catalog({"process": {"command": ["x"]}})


@pytest.mark.parametrize("launch", [["x"], {"docker": "x"}, {1: {}}])
def test_launch_must_map_backend_names_to_mappings(launch: object) -> None:
    with pytest.raises(CatalogError, match="'launch' must map backend names"):
        _catalog({"launch": launch})


@pytest.mark.parametrize(("value", "expected"), [
    ("8GiB", 8 * 2**30), ("512MiB", 512 * 2**20), ("512Mi", 512 * 2**20),
    ("4GB", 4 * 10**9), ("4G", 4 * 10**9), ("1.5Gi", 3 * 2**29), (1024, 1024), (None, None),
])
def test_sizes(value: object, expected: int | None) -> None:
    assert parse_bytes(value) == expected


def test_a_flavor_gives_its_resources() -> None:
    flavor = {"name": "f", "type": "GPU", "params": {"CPU": 8, "GPU": 1, "memory": "64GiB"}}
    resources = _catalog({}, flavor).flavors["f"].resources
    assert (resources.cpus, resources.memory_bytes, resources.gpus) == (8.0, 64 * 2**30, 1)


@pytest.mark.parametrize("params", [{"memory": "lots"}, {"CPU": "two"}, {"GPU": "x"}])
def test_a_flavor_with_unreadable_sizes_is_refused(params: dict[str, object]) -> None:
    with pytest.raises(CatalogError, match="flavor 'f': bad params"):
        _catalog({}, {"name": "f", "type": "CPU", "params": params})


def _with_pools(*pools: dict[str, Any], capacity: object = None) -> Catalog:
    flavor = {"name": "f", "type": "CPU", "params": {}, "capacity": capacity}
    return Catalog.from_mapping({
        "profiles": [{"id": "p", "flavor_type": "CPU"}],
        "flavors": [flavor],
        "pools": list(pools),
    })


def test_capacity_is_per_pool_and_unlimited_without_an_entry() -> None:
    catalog = _with_pools({"id": "a", "capacity": {"f": 3}}, {"id": "b"}, capacity=1)
    assert catalog.capacity_of(None, "f") == 1
    assert catalog.capacity_of("a", "f") == 3
    assert catalog.capacity_of("b", "f") is None
    assert _with_pools().capacity_of(None, "f") is None


@pytest.mark.parametrize(
    ("pools", "capacity", "message"),
    [
        ([{"id": "a", "capacity": {"f": -1}}], None, "capacity must be a whole number"),
        ([{"id": "a", "capacity": {"f": "2"}}], None, "capacity must be a whole number"),
        ([{"id": "a", "capacity": ["f"]}], None, "'capacity' must map flavor names"),
        ([{"id": "a", "capacity": {"g": 1}}], None, "unknown flavors"),
        ([], 1.5, "capacity must be a whole number"),
    ],
)
def test_a_wrong_capacity_is_refused(
    pools: list[dict[str, Any]], capacity: object, message: str
) -> None:
    with pytest.raises(CatalogError, match=message):
        _with_pools(*pools, capacity=capacity)
