"""Queue ranks and admission estimates (domain/queueing.py), on a simulated clock."""

from __future__ import annotations

from demanager.domain.lifecycle import InstanceStatus as S
from demanager.domain.queueing import (
    DEFAULT_RUN_SECONDS,
    Holder,
    QueueEstimates,
    Waiter,
    estimate_queue,
    typical_run_seconds,
)

T0 = 1_700_000_000_000
"""The simulated clock's start, in ms."""
MIN = 60_000


def running(since: int, stop_at: int | None = None) -> Holder:
    return Holder(S.RUNNING, since, stop_at)


def waiters(n: int, *, auto_stop: int | None = None) -> list[Waiter]:
    return [Waiter(f"DE-{i}", T0 + i * 1000, auto_stop) for i in range(1, n + 1)]


def ends(estimates: QueueEstimates, queue: list[Waiter]) -> list[int | None]:
    return [estimates.entries[w.id].end_timestamp for w in queue]


def test_ranks_count_from_one_in_queue_order_and_estimates_never_decrease() -> None:
    queue = waiters(6)
    est = estimate_queue(
        capacity=3,
        holders=[running(T0 - 50 * MIN), running(T0 - 5 * MIN), running(T0 - 20 * MIN)],
        queue=queue,
        now_ms=T0,
    )
    assert [est.entries[w.id].rank for w in queue] == [1, 2, 3, 4, 5, 6]
    assert [est.entries[w.id].begin_timestamp for w in queue] == [w.queued_at for w in queue]
    got = ends(est, queue)
    assert got == sorted(got)  # type: ignore[type-var]


def test_a_holder_with_a_known_auto_stop_deadline_frees_first() -> None:
    # Started long ago, no deadline: frees at start + the typical hour (in 50 min).
    # Started just now with auto-stop in 10 min: frees first.
    holders = [running(T0 - 10 * MIN), running(T0, stop_at=T0 + 10 * MIN)]
    queue = waiters(2)
    est = estimate_queue(capacity=2, holders=holders, queue=queue, now_ms=T0)
    assert ends(est, queue) == [T0 + 10 * MIN, T0 + 50 * MIN]
    assert est.entries["DE-1"].remain_time == 600
    assert est.entries["DE-2"].remain_time == 3000


def test_capacity_two_with_five_queued_take_slots_as_they_free() -> None:
    # Both holders and every waiter run exactly one hour (the free flavor's duration).
    holders = [running(T0 - 30 * MIN, T0 + 30 * MIN), running(T0 - 50 * MIN, T0 + 10 * MIN)]
    queue = waiters(5)
    est = estimate_queue(capacity=2, holders=holders, queue=queue, now_ms=T0, duration_seconds=3600)
    assert ends(est, queue) == [
        T0 + 10 * MIN,  # the holder stopping soonest
        T0 + 30 * MIN,  # the other holder
        T0 + 70 * MIN,  # #1's hour is up
        T0 + 90 * MIN,  # #2's
        T0 + 130 * MIN,  # #3's
    ]
    assert est.next_end_timestamp == T0 + 150 * MIN  # a newcomer waits for #4's hour
    assert est.next_remain_time == 150 * 60


def test_unknown_deadlines_use_the_typical_run_length() -> None:
    holders = [running(T0 - 5 * MIN)]
    queue = waiters(2)
    est = estimate_queue(
        capacity=1, holders=holders, queue=queue, now_ms=T0, typical_seconds=20 * 60
    )
    assert ends(est, queue) == [T0 + 15 * MIN, T0 + 35 * MIN]
    # A waiter's own auto-stop bounds its run, hence when the next one gets in.
    queue = waiters(2, auto_stop=5 * 60)
    est = estimate_queue(
        capacity=1, holders=holders, queue=queue, now_ms=T0, typical_seconds=20 * 60
    )
    assert ends(est, queue) == [T0 + 15 * MIN, T0 + 20 * MIN]


def test_an_overdue_holder_is_expected_to_free_now_never_in_the_past() -> None:
    holders = [running(T0 - 3 * 3600_000), running(T0 - 2 * MIN, stop_at=T0 - 1000)]
    queue = waiters(2)
    est = estimate_queue(capacity=2, holders=holders, queue=queue, now_ms=T0)
    assert ends(est, queue) == [T0, T0]
    assert est.entries["DE-1"].remain_time == 0


def test_stopping_and_starting_holders() -> None:
    holders = [
        Holder(S.STOPPING, T0 - 90 * MIN, None),
        Holder(S.STARTING, None, None, auto_stop_seconds=2 * 3600),
    ]
    queue = waiters(2)
    est = estimate_queue(capacity=2, holders=holders, queue=queue, now_ms=T0)
    assert ends(est, queue) == [T0, T0 + 60 * MIN]  # then the typical hour of #1


def test_an_empty_queue_still_says_when_a_newcomer_would_get_in() -> None:
    est = estimate_queue(capacity=1, holders=[running(T0, T0 + 45 * MIN)], queue=[], now_ms=T0)
    assert est.entries == {}
    assert est.next_end_timestamp == T0 + 45 * MIN
    assert est.next_remain_time == 45 * 60


def test_a_free_slot_means_no_wait() -> None:
    est = estimate_queue(capacity=2, holders=[running(T0, T0 + MIN)], queue=waiters(1), now_ms=T0)
    assert est.entries["DE-1"].end_timestamp == T0
    assert est.entries["DE-1"].remain_time == 0


def test_unlimited_capacity_has_no_queue() -> None:
    est = estimate_queue(capacity=None, holders=[running(T0)], queue=waiters(3), now_ms=T0)
    assert est.entries == {}
    assert est.next_end_timestamp is None


def test_no_slot_at_all_gives_ranks_without_estimates() -> None:
    queue = waiters(2)
    est = estimate_queue(capacity=0, holders=[], queue=queue, now_ms=T0)
    assert [est.entries[w.id].rank for w in queue] == [1, 2]
    assert ends(est, queue) == [None, None]


def test_surplus_holders_must_stop_before_the_queue_moves() -> None:
    # Capacity lowered to 1 with two still running: the head waits for both.
    holders = [running(T0, T0 + 10 * MIN), running(T0, T0 + 20 * MIN)]
    est = estimate_queue(capacity=1, holders=holders, queue=waiters(1), now_ms=T0)
    assert est.entries["DE-1"].end_timestamp == T0 + 20 * MIN


def test_estimates_hold_and_ranks_move_up_as_the_head_is_admitted() -> None:
    """Replay the model's own prediction: at each admission time the head starts and the
    holder it replaces stops; everyone behind moves up a rank and keeps their time."""
    holders = [running(T0 - 40 * MIN, T0 + 20 * MIN), running(T0 - 10 * MIN, T0 + 50 * MIN)]
    queue = waiters(4)
    now = T0
    est = estimate_queue(
        capacity=2, holders=holders, queue=queue, now_ms=now, duration_seconds=3600
    )
    predicted = dict(zip([w.id for w in queue], ends(est, queue), strict=True))
    while queue:
        head, queue = queue[0], queue[1:]
        now = predicted[head.id]  # type: ignore[assignment]
        holders.remove(min(holders, key=lambda h: h.stop_at or 0))
        holders.append(running(now, now + 3600_000))
        est = estimate_queue(
            capacity=2, holders=holders, queue=queue, now_ms=now, duration_seconds=3600
        )
        assert [est.entries[w.id].rank for w in queue] == list(range(1, len(queue) + 1))
        assert ends(est, queue) == [predicted[w.id] for w in queue]
        for w in queue:
            assert est.entries[w.id].remain_time == (predicted[w.id] - now) // 1000  # type: ignore[operator]


def test_typical_run_length() -> None:
    assert typical_run_seconds() == DEFAULT_RUN_SECONDS
    assert typical_run_seconds([600, 1200, 9000]) == 1200
    assert typical_run_seconds([600, 1200, 9000], cap=900) == 900
    # Ages of runs in progress are lower bounds: they can only lengthen the default.
    assert typical_run_seconds(in_progress=[60, 120]) == DEFAULT_RUN_SECONDS
    assert typical_run_seconds(in_progress=[7200, 9000, 10]) == 7200
    assert typical_run_seconds(in_progress=[7200], cap=3600) == 3600


def test_the_worked_example_of_docs_capacity() -> None:
    """docs/capacity.md walks through this queue; keep its table true."""
    ten = T0 - T0 % (24 * 3600_000) + 10 * 3600_000  # 10:00 on the simulated day

    def at(h: int, m: int) -> int:
        return ten + (h - 10) * 3600_000 + m * MIN

    holders = [running(at(9, 40), at(10, 20)), running(at(9, 15))]
    queue = [
        Waiter("W1", at(9, 50), 1800),
        Waiter("W2", at(9, 52)),
        Waiter("W3", at(9, 55), 7200),
        Waiter("W4", at(9, 58)),
    ]
    est = estimate_queue(capacity=2, holders=holders, queue=queue, now_ms=ten)
    assert ends(est, queue) == [at(10, 15), at(10, 20), at(10, 45), at(11, 20)]
    assert [est.entries[w.id].remain_time for w in queue] == [900, 1200, 2700, 4800]
    assert est.next_end_timestamp == at(12, 20)
    assert est.next_remain_time == 8400
