"""Retention: the sweep deletes instances that stayed inactive longer than their
flavor's ``store_time`` (the rule: ``domain/retention.py``).

Each is deleted as a caller's delete would be (``record_delete``): the row becomes a
tombstone in one version-checked write that gives its quota counters back, and the
engine then removes its workload and volume. An instance that someone started,
changed or deleted in between fails that write and is left alone. Every replica
runs this; the write lets exactly one of them delete each instance.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from demanager import errors
from demanager.domain import events, retention
from demanager.domain.catalog import Catalog
from demanager.engine.clock import Clock
from demanager.engine.service import record_delete
from demanager.store.instances import InstanceRepository

log = logging.getLogger(__name__)

INTERVAL_MS = 60_000
"""At most this often the sweep looks for expired instances: store_time counts hours."""
BATCH = 100
"""Instances deleted per look at most; a full batch makes the next sweep look again."""


class RetentionSweep:
    def __init__(
        self,
        *,
        repository: InstanceRepository,
        catalog: Catalog,
        clock: Clock,
        notify: Callable[[str], None],
    ) -> None:
        self._repo = repository
        self._catalog = catalog
        self._clock = clock
        self._notify = notify
        self._next_ms = 0

    async def run(self) -> int:
        """Delete the expired instances (at most once per ``INTERVAL_MS``); returns how
        many this deleted."""
        now = self._clock.now_ms()
        if now < self._next_ms:
            return 0
        self._next_ms = now + INTERVAL_MS
        cutoffs = retention.cutoffs(self._catalog.flavors.values(), now)
        candidates = await self._repo.inactive_before(cutoffs, retention.INACTIVE, limit=BATCH)
        deleted = 0
        for instance in candidates:
            flavor = self._catalog.flavors.get(instance.flavor)
            if flavor is None or not retention.expired(instance, flavor, now):
                continue
            try:
                await record_delete(
                    self._repo, self._catalog, instance, now, actor=events.RETENTION
                )
            except (errors.ConcurrentUpdate, errors.StateError):
                continue  # acted on since it was read: no longer what expired
            log.info(
                "%s: %s since %s, longer than the %d h its flavor %s keeps an inactive "
                "instance; deleted it",
                instance.id, instance.status.value, _utc(instance.updated_at),
                flavor.store_time, flavor.name,
            )
            self._notify(instance.id)
            deleted += 1
        if len(candidates) == BATCH:
            self._next_ms = now  # more may have expired: look again at the next sweep
        return deleted


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
