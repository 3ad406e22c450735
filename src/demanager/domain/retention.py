"""How long an inactive instance is kept: its flavor's ``store_time`` (§3.6, hours,
``-1`` = forever).

Inactive means at rest and holding nothing: stopped or failed. A queued instance is
waiting to run, not inactive, and one that holds resources (creating, starting,
running, stopping, …) is in use, so neither ever expires. A frozen instance does not
expire either: its owner cannot start it, so its rest is not their choice.

Inactivity is measured from ``updated_at`` (the wire's ``latest_update_timestamp``):
the last accepted change — the stop or failure that put it to rest, and any action,
PUT or freeze after it — restarts the count.
"""

from __future__ import annotations

from collections.abc import Iterable

from demanager.domain.catalog import Flavor
from demanager.domain.instance import Instance
from demanager.domain.lifecycle import InstanceStatus as S

HOUR_MS = 3_600_000

INACTIVE: frozenset[S] = frozenset({S.STOPPED, S.CREATE_FAILED, S.START_FAILED, S.RESIZE_FAILED})
"""Statuses in which an instance counts as inactive; none of them holds resources."""


def keeps_forever(flavor: Flavor) -> bool:
    return flavor.store_time < 0


def expires_at(instance: Instance, flavor: Flavor) -> int | None:
    """When ``instance`` is to be deleted if nothing happens to it; ``None``: never."""
    if keeps_forever(flavor) or instance.frozen or instance.status not in INACTIVE:
        return None
    return instance.updated_at + flavor.store_time * HOUR_MS


def expired(instance: Instance, flavor: Flavor, now_ms: int) -> bool:
    deadline = expires_at(instance, flavor)
    return deadline is not None and now_ms >= deadline


def cutoffs(flavors: Iterable[Flavor], now_ms: int) -> dict[str, int]:
    """Flavor name -> the ``updated_at`` before which an inactive instance of it has
    expired, for every flavor that does not keep its instances forever: what the
    store is asked for, before ``expired`` decides each one."""
    return {f.name: now_ms - f.store_time * HOUR_MS for f in flavors if not keeps_forever(f)}
