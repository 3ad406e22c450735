"""Keeps a server's pools current: re-reads the managed pools every few seconds.

Operators change pools with ``demanager pools`` on the database, while any number of
replicas serve from it. Each replica's refresher reads the whole (small) pools table
and puts it in force in the ``PoolDirectory`` its catalog answers from, so a change
applies everywhere within ``pools_refresh_seconds``, with no restart and no message
between replicas. Capacity counters are keyed by pool id in the store, so a new or
changed capacity applies to the next admission at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Collection

from demanager.domain.pools import PoolDirectory, unknown_flavors, within_catalog
from demanager.store.pools import PoolRepository

log = logging.getLogger(__name__)


class PoolRefresher:
    def __init__(
        self,
        *,
        repository: PoolRepository,
        directory: PoolDirectory,
        flavors: Collection[str],
        interval: float,
    ) -> None:
        self._repo = repository
        self._directory = directory
        self._flavors = flavors
        self._interval = interval
        self._task: asyncio.Task[None] | None = None
        self._warned: set[tuple[str, str]] = set()

    async def refresh(self) -> None:
        """Read every managed pool and put them in force, all at once."""
        managed = await self._repo.all()
        for pool in managed:
            for name in unknown_flavors(pool, self._flavors):
                if (pool.id, name) not in self._warned:  # once, not every few seconds
                    self._warned.add((pool.id, name))
                    log.warning("pool %s: ignoring the capacity of %s, which the catalog "
                                "does not have", pool.id, name)
        self._directory.replace(within_catalog(p, self._flavors) for p in managed)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="pool refresher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception:  # the database may be away a moment: keep the last pools
                log.exception("reading the pools failed; keeping the last ones")
