"""The decisions of ``wait_until``, shared by the sync and async clients.

Waiting is a loop of "read the instance, decide, sleep". The decide and the
how-long-to-sleep parts live here; each client supplies only its own ``get``
and ``sleep``. Delays grow exponentially with random jitter (so a fleet of
scripts started together does not poll in lock-step) and never overshoot the
deadline.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable

from demanager.client.exceptions import InstanceFailed, WaitTimeout
from demanager.schemas.events import Event
from demanager.schemas.instances import Instance

#: Contract §4.1. Kept here because the SDK must not import the server's domain.
STATUSES: frozenset[str] = frozenset(
    {
        "CREATE_QUEUING",
        "CREATING",
        "CREATE_FAILED",
        "START_QUEUING",
        "READY_TO_START",
        "STARTING",
        "RESTARTING",
        "START_FAILED",
        "RUNNING",
        "STOPPING",
        "STOPPED",
        "UNAVAILABLE",
        "DELETED",
        "RESIZING",
        "RESIZE_FAILED",
    }
)

#: Statuses an instance does not leave without a caller's action.
FAILED_STATUSES: frozenset[str] = frozenset({"CREATE_FAILED", "START_FAILED", "RESIZE_FAILED"})

ProgressCallback = Callable[[Instance], object]
EventCallback = Callable[[Event], object]

EVENT_GRACE = 0.2
"""Seconds a wait that reached its status still listens for the event of that change."""


def targets_of(status: str | Iterable[str]) -> frozenset[str]:
    """Normalise the ``status`` argument, refusing names that can never appear.

    A typo such as ``RUNING`` would otherwise wait until the timeout.
    """
    targets = frozenset({status} if isinstance(status, str) else status)
    if not targets:
        raise ValueError("wait_until needs at least one target status")
    unknown = sorted(targets - STATUSES)
    if unknown:
        raise ValueError(f"unknown status {', '.join(unknown)}; expected one of {sorted(STATUSES)}")
    return targets


class Waiter:
    """Deadline, backoff and verdicts for one ``wait_until`` call."""

    def __init__(
        self,
        instance_id: str,
        targets: frozenset[str],
        *,
        timeout: float,
        interval: float,
        max_interval: float,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        if timeout < 0 or interval <= 0 or max_interval < interval:
            raise ValueError("need timeout >= 0 and 0 < interval <= max_interval")
        self.instance_id = instance_id
        self.targets = targets
        self.timeout = timeout
        self._clock = clock
        self._deadline = clock() + timeout
        self._delay = interval
        self._max_interval = max_interval
        self._rng = rng or random.Random()
        self.last_status: str | None = None

    def reached(self, instance: Instance) -> bool:
        """True when done; raises if the instance failed on the way."""
        self.last_status = instance.status
        if instance.status in self.targets:
            return True
        if instance.status in FAILED_STATUSES:
            raise InstanceFailed(instance)
        return False

    def next_delay(self) -> float:
        """Seconds to sleep before the next poll; raises once the deadline has passed."""
        remaining = self._deadline - self._clock()
        if remaining <= 0:
            raise WaitTimeout(self.instance_id, self.targets, self.last_status, self.timeout)
        # Full range ±25 % around the nominal delay.
        delay = self._delay * self._rng.uniform(0.75, 1.25)
        self._delay = min(self._delay * 2, self._max_interval)
        return min(delay, remaining)
