"""The token buckets behind the rate limit, on a fake clock."""

from __future__ import annotations

import pytest

from demanager.api.rate_limit import TokenBuckets, caller_key


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_rate() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate=2.0, burst=3, clock=clock)
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a") == pytest.approx(0.5)
    clock.now += 0.5
    assert buckets.take("a") == 0.0
    assert buckets.take("a") == pytest.approx(0.5)


def test_refill_stops_at_the_burst() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate=1.0, burst=2, clock=clock)
    buckets.take("a")
    clock.now += 3600
    assert [buckets.take("a") for _ in range(2)] == [0.0, 0.0]
    assert buckets.take("a") > 0


def test_callers_are_independent() -> None:
    buckets = TokenBuckets(rate=1.0, burst=1, clock=Clock())
    assert buckets.take("a") == 0.0
    assert buckets.take("a") > 0
    assert buckets.take("b") == 0.0


def test_bucket_count_is_bounded() -> None:
    buckets = TokenBuckets(rate=1.0, burst=1, clock=Clock(), max_buckets=2)
    for key in ("a", "b", "c"):
        buckets.take(key)
    # "a", the least recently used, was dropped: it starts afresh.
    assert buckets.take("a") == 0.0
    assert buckets.take("c") > 0


def test_caller_key_hashes_the_token() -> None:
    scope = {"headers": [(b"x-auth-token", b"secret")], "client": ("10.0.0.1", 5000)}
    key = caller_key(scope)
    assert "secret" not in key and key.startswith("token:")
    assert caller_key({"headers": [], "client": ("10.0.0.1", 5000)}) == "address:10.0.0.1"
    assert caller_key({"headers": [(b"x-auth-token", b"")], "client": None}) == "address:unknown"
