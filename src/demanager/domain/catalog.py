"""Profiles (environment images), flavors (sizes), pools and workspaces.

The catalog is deployment data, read once at start from a YAML file (or the
built-in default, Appendix B of the contract). This module turns the parsed
mapping into frozen objects and checks it, so that a wrong catalog fails the
start with a clear message instead of surfacing as a 500 later.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


class CatalogError(ValueError):
    """The catalog file is not usable; the message names the entry."""


@dataclass(frozen=True)
class Profile:
    id: str
    name: str
    description: str
    flavor_type: str
    namespace: str
    image_name: str
    image_tag: str
    category: str | None
    launch: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """How each backend runs the profile, by backend name (``process``, ``docker``,
    ``kubernetes``, …): raw sections that the backend itself reads and checks."""
    provision_annotations: Mapping[str, str] | None = None
    labels: Mapping[str, str] | None = None

    @property
    def image(self) -> str:
        """The container image the docker and kubernetes backends run."""
        return f"{self.namespace}/{self.image_name}:{self.image_tag}"


_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
          "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}


def parse_bytes(value: object) -> int | None:
    """``8GiB``, ``512Mi``, ``4G``, ``4GB`` or a number of bytes; None when absent."""
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]i?)?b?\s*", str(value), re.IGNORECASE)
    if match is None:
        raise CatalogError(f"not a size: {value!r} (use e.g. 8GiB or 512MiB)")
    return int(float(match.group(1)) * _UNITS[(match.group(2) or "").lower()])


@dataclass(frozen=True)
class Resources:
    """What a flavor gives each instance: the limits the container backends enforce."""

    cpus: float
    memory_bytes: int | None
    gpus: int


@dataclass(frozen=True)
class Flavor:
    name: str
    type: str
    params: Mapping[str, Any]
    promo_type: str = "NoDiscount"
    storage_list: tuple[str, ...] = ("obs", "evs")
    capacity: int | None = None
    """Concurrent instances holding resources; ``None`` = no limit."""
    per_project_quota: int | None = None
    duration: int | None = None
    store_time: int = -1
    permitted_users: frozenset[str] | None = None
    """User names allowed to use the flavor; ``None`` = every user."""
    permitted_projects: frozenset[str] | None = None
    """Project ids allowed to use the flavor; ``None`` = every project."""

    @property
    def free(self) -> bool:
        return self.promo_type == "Free"

    @property
    def resources(self) -> Resources:
        return Resources(
            cpus=float(self.params.get("CPU", 1)),
            memory_bytes=parse_bytes(self.params.get("memory")),
            gpus=int(self.params.get("GPU", 0) or 0),
        )

    def permits(self, user_name: str, project_id: str) -> bool:
        """Whether the user, acting in the project, may use the flavor (``is_permitted``,
        6328): each list that is set must name the caller; a list left out admits all."""
        return (self.permitted_users is None or user_name in self.permitted_users) and (
            self.permitted_projects is None or project_id in self.permitted_projects
        )


@dataclass(frozen=True)
class Pool:
    id: str
    name: str
    type: str = "USER_DEFINED"
    ready: bool = True
    owner_project: str | None = None
    capacity: Mapping[str, int] = field(default_factory=dict)
    """Flavor name -> instances of it that may hold resources in this pool at once; a
    flavor without an entry is unlimited here."""


@dataclass(frozen=True)
class Catalog:
    profiles: Mapping[str, Profile]
    flavors: Mapping[str, Flavor]
    pools: Mapping[str, Pool] = field(default_factory=dict)
    workspaces: frozenset[str] = frozenset({"0"})

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Catalog:
        profiles = {p.id: p for p in (_profile(x) for x in _list(data, "profiles"))}
        flavors = {f.name: f for f in (_flavor(x) for x in _list(data, "flavors"))}
        pools = {p.id: p for p in (_pool(x) for x in _list(data, "pools", required=False))}
        workspaces = frozenset(str(w) for w in data.get("workspaces", ["0"])) | {"0"}
        if not profiles or not flavors:
            raise CatalogError("the catalog needs at least one profile and one flavor")
        for pool in pools.values():
            unknown = sorted(set(pool.capacity) - set(flavors))
            if unknown:
                raise CatalogError(f"pool {pool.id!r}: capacity names unknown flavors {unknown}")
        return cls(profiles=profiles, flavors=flavors, pools=pools, workspaces=workspaces)

    def capacity_of(self, pool_id: str | None, flavor_name: str) -> int | None:
        """How many instances of ``flavor_name`` may hold resources at once in a pool
        (``None``: the shared pool, where the flavor's own ``capacity`` applies); ``None``
        = unlimited. An unknown pool or flavor is unlimited: nothing would launch there."""
        if pool_id is None:
            flavor = self.flavors.get(flavor_name)
            return flavor.capacity if flavor is not None else None
        pool = self.pools.get(pool_id)
        return pool.capacity.get(flavor_name) if pool is not None else None


def _list(
    data: Mapping[str, Any], key: str, *, required: bool = True
) -> Sequence[Mapping[str, Any]]:
    value = data.get(key)
    if value is None and not required:
        return []
    if not isinstance(value, list) or not all(isinstance(x, dict) for x in value):
        raise CatalogError(f"'{key}' must be a list of mappings")
    return value


def _req(entry: Mapping[str, Any], key: str, what: str) -> Any:
    if key not in entry:
        raise CatalogError(f"{what} {entry.get('id') or entry.get('name')!r} lacks '{key}'")
    return entry[key]


def _profile(entry: Mapping[str, Any]) -> Profile:
    pid = str(_req(entry, "id", "profile"))
    image = entry.get("image", {}) or {}
    if "process" in entry:
        raise CatalogError(f"profile {pid!r}: 'process' moved under 'launch' (launch.process)")
    launch = entry.get("launch", {}) or {}
    if not isinstance(launch, dict) or not all(
        isinstance(k, str) and isinstance(v, dict) for k, v in launch.items()
    ):
        raise CatalogError(f"profile {pid!r}: 'launch' must map backend names to mappings")
    flavor_type = str(_req(entry, "flavor_type", "profile"))
    if flavor_type.upper() not in {"CPU", "GPU", "ASCEND"}:
        raise CatalogError(f"profile {pid!r}: flavor_type must be CPU, GPU or Ascend")
    return Profile(
        id=pid,
        name=str(entry.get("name", pid)),
        description=str(entry.get("description", "")),
        flavor_type=flavor_type,
        namespace=str(image.get("namespace", "atelier")),
        image_name=str(image.get("name", "demanager-notebook")),
        image_tag=str(image.get("tag", "latest")),
        category=entry.get("category"),
        launch=launch,
        provision_annotations=entry.get("provision_annotations"),
        labels=entry.get("labels"),
    )


def _flavor(entry: Mapping[str, Any]) -> Flavor:
    name = str(_req(entry, "name", "flavor"))
    ftype = str(_req(entry, "type", "flavor")).upper()
    if ftype not in {"CPU", "GPU", "ASCEND"}:
        raise CatalogError(f"flavor {name!r}: type must be CPU, GPU or ASCEND")
    params = dict(entry.get("params") or {})
    try:
        parse_bytes(params.get("memory"))
        float(params.get("CPU", 1))
        int(params.get("GPU", 0) or 0)
    except (CatalogError, TypeError, ValueError) as exc:
        raise CatalogError(f"flavor {name!r}: bad params: {exc}") from exc
    return Flavor(
        name=name,
        type=ftype,
        params=params,
        promo_type=str(entry.get("promo_type", "NoDiscount")),
        storage_list=tuple(str(s) for s in entry.get("storage_list", ["obs", "evs"])),
        capacity=_capacity(entry.get("capacity"), f"flavor {name!r}"),
        per_project_quota=entry.get("per_project_quota"),
        duration=entry.get("duration"),
        store_time=_store_time(entry.get("store_time", -1), f"flavor {name!r}"),
        permitted_users=_names(entry, "permitted_users", f"flavor {name!r}"),
        permitted_projects=_names(entry, "permitted_projects", f"flavor {name!r}"),
    )


def _store_time(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < -1:
        raise CatalogError(f"{what}: store_time must be whole hours >= 0, or -1, not {value!r}")
    return value


def _names(entry: Mapping[str, Any], key: str, what: str) -> frozenset[str] | None:
    """An optional list of names; an empty list admits nobody, a missing one everybody."""
    value = entry.get(key)
    if value is None:
        return None
    if not isinstance(value, list):
        raise CatalogError(f"{what}: {key} must be a list")
    return frozenset(str(v) for v in value)


def _capacity(value: object, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CatalogError(f"{what}: capacity must be a whole number >= 0, not {value!r}")
    return value


def _pool(entry: Mapping[str, Any]) -> Pool:
    pid = str(_req(entry, "id", "pool"))
    capacity = entry.get("capacity") or {}
    if not isinstance(capacity, dict):
        raise CatalogError(f"pool {pid!r}: 'capacity' must map flavor names to numbers")
    limits = {str(name): _capacity(n, f"pool {pid!r}, flavor {name!r}") for name, n in
              capacity.items()}
    return Pool(
        id=pid,
        name=str(entry.get("name", pid)),
        type=str(entry.get("type", "USER_DEFINED")),
        ready=bool(entry.get("ready", True)),
        owner_project=entry.get("owner_project"),
        capacity={name: n for name, n in limits.items() if n is not None},
    )
