"""Dedicated pools as a server sees them now: the catalog's, with the pools operators
manage at run time (``demanager pools``) laid over them.

The catalog file is read once at start, but pools change while servers run, and
several replicas share one database. ``PoolDirectory`` stands in for the catalog's
``pools`` mapping: it answers from an immutable snapshot that is replaced whole
whenever the managed pools are read again, so every reader of ``Catalog.pools``
(validation, presentation, capacity) sees the change without a restart, and each
lookup sees one consistent version of a pool.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import replace
from types import MappingProxyType

from demanager.domain.catalog import Pool

POOL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
"""What a managed pool's id may look like: it is stored in a 64-character column and
typed in commands and URLs."""


class PoolDirectory(Mapping[str, Pool]):
    """The pools in force: the catalog's, each replaced by a managed pool of its id."""

    def __init__(self, catalog_pools: Mapping[str, Pool]) -> None:
        self._catalog: Mapping[str, Pool] = MappingProxyType(dict(catalog_pools))
        self._current: Mapping[str, Pool] = self._catalog

    @property
    def catalog(self) -> Mapping[str, Pool]:
        """The pools of the catalog file alone."""
        return self._catalog

    @property
    def current(self) -> Mapping[str, Pool]:
        """One immutable snapshot of the pools in force."""
        return self._current

    def replace(self, managed: Iterable[Pool]) -> None:
        """Put ``managed`` (every managed pool, as read at one instant) in force."""
        merged = dict(self._catalog)
        merged.update((pool.id, pool) for pool in managed)
        self._current = MappingProxyType(merged)

    def __getitem__(self, pool_id: str) -> Pool:
        return self._current[pool_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._current)

    def __len__(self) -> int:
        return len(self._current)


def unknown_flavors(pool: Pool, flavors: Collection[str]) -> list[str]:
    """The flavors ``pool``'s capacity names that the catalog does not have."""
    return sorted(set(pool.capacity) - set(flavors))


def within_catalog(pool: Pool, flavors: Collection[str]) -> Pool:
    """``pool`` without capacity entries for flavors the catalog no longer has (one was
    removed from the file after the pool was set): they could never be used."""
    if not unknown_flavors(pool, flavors):
        return pool
    kept = {name: n for name, n in pool.capacity.items() if name in flavors}
    return replace(pool, capacity=kept)
