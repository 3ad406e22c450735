"""Jittered exponential backoff for polling a cheap predicate up to a deadline."""

from __future__ import annotations

import random


class Backoff:
    def __init__(self, first: float = 0.02, cap: float = 0.25, factor: float = 1.6) -> None:
        self._next = first
        self._cap = cap
        self._factor = factor

    def next(self) -> float:
        delay = self._next
        self._next = min(self._cap, self._next * self._factor)
        return delay * random.uniform(0.8, 1.0)
