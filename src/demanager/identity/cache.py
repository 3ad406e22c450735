"""A short memory of valid tokens, so that a request does not query the store for its
caller each time.

At hundreds of reads a second the token lookup (one indexed query, with a thread hop
on SQLite) costs as much as the read itself. A token found valid is remembered for
``ttl_seconds`` under its keyed digest, never the token itself; its expiry is still
checked on every use. Only successes are kept, so a guessed or revoked token reaches
the store every time and cannot push valid entries out faster than valid tokens do.

Every change made to tokens, users or memberships empties the cache at once
(``changed``); a lookup that began before such a change cannot put back what it read
(the ``generation`` it started under is stale). The operator's commands run in their
own process, on the server's data dir: a change also rewrites a marker file there,
which every lookup compares (one small read), so the server forgets too. A change made
on another host (a replica with its own data dir) is seen within ``ttl_seconds``.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

V = TypeVar("V")


class TokenCache(Generic[V]):
    def __init__(
        self,
        *,
        ttl_seconds: float,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        marker: Path | None = None,
    ) -> None:
        """``ttl_seconds`` 0 keeps nothing: every request asks the store. ``marker``: the
        file every process sharing the data dir rewrites on a change."""
        self._ttl = ttl_seconds
        self._marker = marker
        self._seen = self._read_marker()
        self._max = max_entries
        self._clock = clock
        self._entries: dict[str, tuple[float, V]] = {}
        self.generation = 0
        """Bumped by every ``clear``: what ``put`` checks its lookup against."""

    def get(self, digest: str) -> V | None:
        if self._marker is not None and self._entries:
            seen = self._read_marker()
            if seen != self._seen:
                self._seen = seen
                self.clear()
        found = self._entries.get(digest)
        if found is None:
            return None
        stored_at, value = found
        if self._clock() - stored_at >= self._ttl:
            del self._entries[digest]
            return None
        return value

    def put(self, digest: str, value: V, generation: int) -> None:
        """Remember ``value``, read from the store under ``generation``; nothing when the
        cache was cleared meanwhile (the read may predate a revocation)."""
        if self._ttl <= 0 or generation != self.generation:
            return
        if digest not in self._entries and len(self._entries) >= self._max:
            self._evict()
        self._entries[digest] = (self._clock(), value)

    def clear(self) -> None:
        self._entries.clear()
        self.generation += 1

    def changed(self) -> None:
        """Tokens, users or memberships changed (committed): forget, here and in every
        process that shares the marker."""
        self.clear()
        if self._marker is None:
            return
        temporary = self._marker.with_name(f".{self._marker.name}.{secrets.token_hex(8)}")
        try:
            temporary.write_text(secrets.token_hex(16), encoding="ascii")
            os.replace(temporary, self._marker)
        except OSError as exc:
            log.warning("could not tell the server of an identity change (%s): it applies "
                        "within %g s", exc, self._ttl)
            temporary.unlink(missing_ok=True)
        self._seen = self._read_marker()

    def _read_marker(self) -> bytes:
        if self._marker is None:
            return b""
        try:
            return self._marker.read_bytes()
        except OSError:
            return b""

    def __len__(self) -> int:
        return len(self._entries)

    def _evict(self) -> None:
        """Drop the stale entries, or when none is, the oldest one (insertion order)."""
        now = self._clock()
        stale = [d for d, (at, _) in self._entries.items() if now - at >= self._ttl]
        for digest in stale:
            del self._entries[digest]
        if len(self._entries) >= self._max:
            del self._entries[next(iter(self._entries))]
