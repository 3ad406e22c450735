"""Objects built from rows, remembered by the row's exact content.

Turning a row into a domain object (decoding its JSON columns, building a dozen frozen
dataclasses) was the largest single cost of a list request (docs/benchmarks.md, Read
path), and the rows of a page mostly come back unchanged from one request to the next.
A ``Memo`` maps a row's values, the whole key, to what was built from them: a changed
column is a different key, so nothing it returns can be stale, and no write has to
tell it anything.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Memo(Generic[K, V]):
    """``build(key)``, remembered for the last ``capacity`` keys built (oldest out first).

    What it returns is shared by every caller of the same key, so it must be treated as
    immutable, as the store's domain objects are."""

    __slots__ = ("_build", "_capacity", "_entries")

    def __init__(self, build: Callable[[K], V], capacity: int) -> None:
        if capacity < 1:
            raise ValueError("a memo holds at least one entry")
        self._build = build
        self._capacity = capacity
        self._entries: dict[K, V] = {}

    def __call__(self, key: K) -> V:
        found = self._entries.get(key)
        if found is None:
            entries = self._entries
            if len(entries) >= self._capacity:
                del entries[next(iter(entries))]
            found = entries[key] = self._build(key)
        return found

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()
