"""``wait_until``: polling with backoff to a deadline, typed endings."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from demanager.client import (
    AsyncClient,
    Client,
    Instance,
    InstanceFailed,
    InstanceNotFound,
    WaitTimeout,
)
from demanager.client._waiting import Waiter
from tests.unit.sdk_fakes import PROJECT, wire_instance


def sequence(*answers: httpx.Response) -> tuple[list[httpx.Request], httpx.MockTransport]:
    """Answers in order; the last one repeats forever."""
    seen: list[httpx.Request] = []
    queue: Iterator[httpx.Response] = iter(answers)
    last = answers[-1]

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return next(queue, last)

    return seen, httpx.MockTransport(handler)


def status(value: str, **changes: Any) -> httpx.Response:
    return httpx.Response(200, json=wire_instance(1, value, **changes))


FAST = {"interval": 0.001, "max_interval": 0.004}


def test_returns_once_a_target_is_reached() -> None:
    seen, transport = sequence(status("CREATING"), status("CREATING"), status("RUNNING"))
    progress: list[str] = []
    with Client("http://dm.test", project=PROJECT, token="t", transport=transport) as dm:
        final = dm.wait_until(
            "DE-1", "RUNNING", timeout=5, on_progress=lambda i: progress.append(i.status), **FAST
        )
    assert final.status == "RUNNING"
    assert progress == ["CREATING", "CREATING", "RUNNING"]
    assert len(seen) == 3


def test_accepts_a_set_of_targets() -> None:
    _, transport = sequence(status("STOPPING"), status("STOPPED"))
    with Client("http://dm.test", project=PROJECT, token="t", transport=transport) as dm:
        assert dm.wait_until("DE-1", {"STOPPED", "RUNNING"}, timeout=5, **FAST).status == "STOPPED"


def test_failed_status_raises_with_the_reason() -> None:
    failed = status(
        "START_FAILED",
        error_code="ModelArts.6361",
        spec={
            **wire_instance()["spec"],
            "failed_reasons": {"code": "ModelArts.6361", "message": "image missing", "detail": {}},
        },
    )
    _, transport = sequence(status("STARTING"), failed)
    with (
        Client("http://dm.test", project=PROJECT, token="t", transport=transport) as dm,
        pytest.raises(InstanceFailed) as caught,
    ):
        dm.wait_until("DE-1", "RUNNING", timeout=5, **FAST)
    assert caught.value.status == "START_FAILED"
    assert caught.value.error_code == "ModelArts.6361"
    assert "image missing" in str(caught.value)


def test_failed_status_that_is_a_target_is_returned() -> None:
    _, transport = sequence(status("CREATE_FAILED"))
    with Client("http://dm.test", project=PROJECT, token="t", transport=transport) as dm:
        final = dm.wait_until("DE-1", {"RUNNING", "CREATE_FAILED"}, timeout=5, **FAST)
    assert final.status == "CREATE_FAILED"


def test_times_out_with_the_last_status() -> None:
    seen, transport = sequence(status("CREATING"))
    with (
        Client("http://dm.test", project=PROJECT, token="t", transport=transport) as dm,
        pytest.raises(WaitTimeout) as caught,
    ):
        dm.wait_until("DE-1", "RUNNING", timeout=0.05, **FAST)
    assert isinstance(caught.value, TimeoutError)
    assert caught.value.last_status == "CREATING"
    assert caught.value.targets == {"RUNNING"}
    assert len(seen) >= 2


def test_busy_server_is_retried() -> None:
    busy = httpx.Response(429, json={"error_code": "ModelArts.6101", "error_message": "busy"})
    _, transport = sequence(busy, busy, status("RUNNING"))
    with Client("http://dm.test", project=PROJECT, token="t", transport=transport) as dm:
        assert dm.wait_until("DE-1", "RUNNING", timeout=5, **FAST).status == "RUNNING"


def test_other_errors_end_the_wait() -> None:
    gone = httpx.Response(400, json={"error_code": "ModelArts.6309", "error_message": "gone"})
    _, transport = sequence(status("CREATING"), gone)
    with (
        Client("http://dm.test", project=PROJECT, token="t", transport=transport) as dm,
        pytest.raises(InstanceNotFound),
    ):
        dm.wait_until("DE-1", "RUNNING", timeout=5, **FAST)


@pytest.mark.parametrize("bad", ["RUNING", set(), {"RUNNING", "running"}])
def test_unknown_target_is_refused_before_any_request(bad: Any) -> None:
    seen, transport = sequence(status("RUNNING"))
    with (
        Client("http://dm.test", project=PROJECT, token="t", transport=transport) as dm,
        pytest.raises(ValueError),
    ):
        dm.wait_until("DE-1", bad, timeout=5)
    assert seen == []


def test_wait_until_deleted() -> None:
    gone = httpx.Response(400, json={"error_code": "ModelArts.6309", "error_message": "gone"})
    seen, transport = sequence(status("STOPPED"), gone)
    with Client("http://dm.test", project=PROJECT, token="t", transport=transport) as dm:
        dm.wait_until_deleted("DE-1", timeout=5, interval=0.001)
    assert len(seen) == 2


def test_wait_until_deleted_times_out() -> None:
    _, transport = sequence(status("STOPPED"))
    with (
        Client("http://dm.test", project=PROJECT, token="t", transport=transport) as dm,
        pytest.raises(WaitTimeout),
    ):
        dm.wait_until_deleted("DE-1", timeout=0.02, interval=0.001)


async def test_async_wait_until() -> None:
    answers = iter(["CREATING", "STARTING", "RUNNING"])

    async def handler(request: httpx.Request) -> httpx.Response:
        return status(next(answers, "RUNNING"))

    seen: list[Instance] = []
    async with AsyncClient(
        "http://dm.test", project=PROJECT, token="t", transport=httpx.MockTransport(handler)
    ) as dm:
        final = await dm.wait_until("DE-1", "RUNNING", timeout=5, on_progress=seen.append, **FAST)
    assert final.status == "RUNNING"
    assert [i.status for i in seen] == ["CREATING", "STARTING", "RUNNING"]


async def test_async_wait_times_out_and_fails() -> None:
    async def creating(request: httpx.Request) -> httpx.Response:
        return status("CREATING")

    async with AsyncClient(
        "http://dm.test", project=PROJECT, token="t", transport=httpx.MockTransport(creating)
    ) as dm:
        with pytest.raises(WaitTimeout):
            await dm.wait_until("DE-1", "RUNNING", timeout=0.02, **FAST)

    async def failed(request: httpx.Request) -> httpx.Response:
        return status("CREATE_FAILED")

    async with AsyncClient(
        "http://dm.test", project=PROJECT, token="t", transport=httpx.MockTransport(failed)
    ) as dm:
        with pytest.raises(InstanceFailed):
            await dm.wait_until("DE-1", "RUNNING", timeout=5, **FAST)


# -- the backoff itself, on a fake clock ------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_delays_grow_with_jitter_up_to_the_cap() -> None:
    clock = FakeClock()
    waiter = Waiter(
        "DE-1",
        frozenset({"RUNNING"}),
        timeout=1000,
        interval=1,
        max_interval=8,
        clock=clock,
        rng=random.Random(7),
    )
    delays = [waiter.next_delay() for _ in range(8)]
    nominal = [1, 2, 4, 8, 8, 8, 8, 8]
    for delay, base in zip(delays, nominal, strict=True):
        assert 0.75 * base <= delay <= 1.25 * base
    assert len(set(delays)) == len(delays), "jitter makes every delay different"


def test_delay_never_overshoots_the_deadline() -> None:
    clock = FakeClock()
    waiter = Waiter(
        "DE-1", frozenset({"RUNNING"}), timeout=3, interval=2, max_interval=10, clock=clock
    )
    clock.now += 2.5
    assert waiter.next_delay() == pytest.approx(0.5)
    clock.now += 0.5
    with pytest.raises(WaitTimeout):
        waiter.next_delay()


@pytest.mark.parametrize(
    ("timeout", "interval", "max_interval"), [(-1, 1, 1), (1, 0, 1), (1, 2, 1)]
)
def test_bad_pacing_is_refused(timeout: float, interval: float, max_interval: float) -> None:
    with pytest.raises(ValueError):
        Waiter(
            "DE-1",
            frozenset({"RUNNING"}),
            timeout=timeout,
            interval=interval,
            max_interval=max_interval,
        )
