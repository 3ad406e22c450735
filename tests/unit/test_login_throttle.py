"""The failed-sign-in limiter, on an injected clock: windows, per-user and per-address
limits, and the reset a success brings."""

from __future__ import annotations

from demanager.identity.throttle import LoginThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def throttle(clock: Clock) -> LoginThrottle:
    return LoginThrottle(per_user=3, per_address=5, window_seconds=300, now=clock)


def test_a_user_is_held_back_after_the_limit_until_the_oldest_failure_expires() -> None:
    clock = Clock()
    limiter = throttle(clock)
    for step in range(3):
        assert limiter.retry_after("name:a", "10.0.0.1") == 0
        limiter.failed("name:a", "10.0.0.1")
        clock.now += 10 * (step + 1)  # failures at 1000, 1010, 1030
    assert limiter.retry_after("name:a", "10.0.0.2") == 1300 - clock.now
    clock.now = 1299.5
    assert limiter.retry_after("name:a", "10.0.0.2") == 1  # rounded up, never 0 while held
    clock.now = 1300
    assert limiter.retry_after("name:a", "10.0.0.2") == 0


def test_a_success_clears_the_user_but_not_the_address() -> None:
    clock = Clock()
    limiter = throttle(clock)
    for _ in range(2):
        limiter.failed("name:a", "10.0.0.1")
    limiter.succeeded("name:a")
    for _ in range(2):
        limiter.failed("name:a", "10.0.0.1")
    assert limiter.retry_after("name:a", "10.0.0.1") == 0
    limiter.failed("name:b", "10.0.0.1")
    # five failures from the address: everyone there waits, elsewhere nobody does
    assert limiter.retry_after("name:c", "10.0.0.1") == 300
    assert limiter.retry_after("name:c", "10.0.0.9") == 0


def test_users_are_counted_apart() -> None:
    clock = Clock()
    limiter = LoginThrottle(per_user=1, per_address=100, window_seconds=60, now=clock)
    limiter.failed("name:a", "x")
    assert limiter.retry_after("name:a", "x") == 60
    assert limiter.retry_after("name:b", "x") == 0
    assert limiter.retry_after("id:a", "x") == 0
