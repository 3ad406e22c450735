"""Failed password sign-ins, counted per user and per client address.

Without a limit a password can be guessed as fast as the server answers. After
``per_user`` failures for one user (as the request named them) or ``per_address``
failures from one address within ``window_seconds``, further attempts are refused
without checking the password, until the oldest failure leaves the window. A
success clears the user's count (not the address's: one valid account must not
launder guesses against others).

The counts live in memory, per server process: replicas each count on their own,
and a restart forgets. That bounds guessing well enough for a self-hosted server
and needs no store round trip on the hot path of a failed login.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

MAX_KEYS = 100_000
"""Distinct users and addresses tracked at once; a flood of made-up names evicts the
oldest entries instead of growing memory without end."""


class _Window:
    """Failure instants per key, oldest first, pruned to the window on each use."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._failures: dict[str, deque[float]] = {}

    def _live(self, key: str, now: float) -> deque[float] | None:
        failures = self._failures.get(key)
        if failures is None:
            return None
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if not failures:
            del self._failures[key]
            return None
        return failures

    def wait(self, key: str, now: float) -> float:
        """Seconds until ``key`` may try again; 0 when it may now."""
        failures = self._live(key, now)
        if failures is None or len(failures) < self.limit:
            return 0.0
        return failures[-self.limit] + self.window - now

    def add(self, key: str, now: float) -> None:
        failures = self._live(key, now)
        if failures is None:
            if len(self._failures) >= MAX_KEYS:
                self._evict(now)
            failures = self._failures[key] = deque(maxlen=self.limit)
        failures.append(now)

    def clear(self, key: str) -> None:
        self._failures.pop(key, None)

    def _evict(self, now: float) -> None:
        for key in list(self._failures):
            self._live(key, now)
        while len(self._failures) >= MAX_KEYS:
            del self._failures[next(iter(self._failures))]


class LoginThrottle:
    def __init__(
        self,
        *,
        per_user: int,
        per_address: int,
        window_seconds: float,
        now: Callable[[], float],
    ) -> None:
        """``now`` is a monotonic clock in seconds (injected so tests need not wait)."""
        self._users = _Window(per_user, window_seconds)
        self._addresses = _Window(per_address, window_seconds)
        self._now = now

    def retry_after(self, user: str, address: str) -> int:
        """Whole seconds before a sign-in as ``user`` from ``address`` may be checked;
        0 when it may be checked now."""
        now = self._now()
        wait = max(self._users.wait(user, now), self._addresses.wait(address, now))
        return max(1, math.ceil(wait)) if wait > 0 else 0

    def failed(self, user: str, address: str) -> None:
        now = self._now()
        self._users.add(user, now)
        self._addresses.add(address, now)

    def succeeded(self, user: str) -> None:
        self._users.clear(user)
