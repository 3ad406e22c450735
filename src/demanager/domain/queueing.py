"""Where each instance stands in a free flavor's queue, and when it should get a slot.

A pure function of what the store holds at one instant (contract §3.16, §4.5): the
instances holding the flavor's slots, the queue in first-come order, the typical run
length and ``now``. The model, in full (docs/capacity.md shows a worked example):

* each holder frees its slot at its stop deadline when one is known (auto-stop or
  the flavor's forced ``duration``, §4.4), else at its start plus the typical run
  length, and never before ``now``; one that is stopping frees it now;
* the k-th in line takes the k-th slot to free, then holds it for its own expected
  run (its auto-stop or the flavor's ``duration``, whichever is shorter, else the
  typical run length), which is when that slot frees for someone further back.

Slots are taken in order of freeing and each admitted run ends no earlier than it
began, so the estimates never decrease along the queue. A min-heap of slot-free
times makes the whole queue O((holders + queued) · log capacity).

What it cannot know: that a user stops early, deletes a queued instance, or that
the catalog's capacity changes; how long a workload takes to boot. Estimates are
recomputed on every response, so they correct themselves as those things happen.
"""

from __future__ import annotations

import heapq
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from demanager.domain.catalog import Flavor
from demanager.domain.lifecycle import InstanceStatus

DEFAULT_RUN_SECONDS = 3600
"""The typical run when nothing better is known: one hour, the shortest auto-stop the
contract allows by default and the usual forced duration of a free flavor."""


@dataclass(frozen=True, slots=True)
class Holder:
    """An instance holding one of the flavor's slots."""

    status: InstanceStatus
    running_since: int | None
    """ms it entered RUNNING; None while it is still being brought up."""
    stop_at: int | None
    """ms its run must stop, when known (set while RUNNING with a countdown)."""
    auto_stop_seconds: int | None = None
    """Its armed auto-stop duration, which bounds a run that has not started yet."""


@dataclass(frozen=True, slots=True)
class Waiter:
    """An instance in the queue."""

    id: str
    queued_at: int
    """ms it entered the queue (``queuing_info.begin_timestamp``)."""
    auto_stop_seconds: int | None = None
    """The auto-stop its run will be armed with, if enabled."""


@dataclass(frozen=True, slots=True)
class Estimate:
    rank: int
    """1 = next to get a slot."""
    begin_timestamp: int
    end_timestamp: int | None
    """ms a slot is expected to free for it; None when the flavor has no slot at all."""
    remain_time: int | None
    """Whole seconds from now until ``end_timestamp``, never negative."""


@dataclass(frozen=True)
class QueueEstimates:
    entries: Mapping[str, Estimate] = field(default_factory=dict)
    """Instance id -> its place and estimate."""
    next_end_timestamp: int | None = None
    """When a newcomer joining the end of the queue would get a slot."""
    next_remain_time: int | None = None
    """Seconds until then (``flavor_details.queue_left_time``)."""


def typical_run_seconds(
    finished: Sequence[int] = (),
    in_progress: Sequence[int] = (),
    *,
    cap: int | None = None,
    default: int = DEFAULT_RUN_SECONDS,
) -> int:
    """The run length to assume where no deadline is known, in seconds.

    The median of ``finished`` run lengths when there are any. Otherwise ``default``,
    raised to the median age of the runs ``in_progress``: an age is only a lower bound
    of its run's length, so it may lengthen the estimate but never shorten it. Never
    more than ``cap`` (the flavor's forced ``duration``), never less than a second.
    """
    if finished:
        typical = int(statistics.median(finished))
    else:
        typical = default
        if in_progress:
            typical = max(typical, int(statistics.median(in_progress)))
    if cap is not None:
        typical = min(typical, cap)
    return max(1, typical)


def estimate_queue(
    *,
    capacity: int | None,
    holders: Sequence[Holder],
    queue: Sequence[Waiter],
    now_ms: int,
    typical_seconds: int = DEFAULT_RUN_SECONDS,
    duration_seconds: int | None = None,
) -> QueueEstimates:
    """Rank and admission estimate of every instance in ``queue`` (first in line first).

    ``capacity`` None means the flavor never queues: there is nothing to estimate.
    ``duration_seconds`` is the flavor's forced run length, if any.
    """
    if capacity is None:
        return QueueEstimates()
    if capacity <= 0:  # no slot will ever free: ranks, but no estimate
        return QueueEstimates(
            {w.id: Estimate(i, w.queued_at, None, None) for i, w in enumerate(queue, 1)}
        )

    def run_ms(auto_stop: int | None) -> int:
        limits = [s for s in (auto_stop, duration_seconds) if s]
        return (min(limits) if limits else typical_seconds) * 1000

    typical_ms = typical_seconds * 1000
    frees: list[int] = []
    for h in holders:
        if h.status is InstanceStatus.STOPPING:
            at = now_ms
        elif h.running_since is None:  # still coming up: its run has not begun
            at = now_ms + run_ms(h.auto_stop_seconds)
        elif h.stop_at is not None:
            at = h.stop_at
        else:
            at = h.running_since + typical_ms
        frees.append(max(at, now_ms))
    frees.extend([now_ms] * (capacity - len(frees)))  # slots free right now
    heapq.heapify(frees)
    for _ in range(len(frees) - capacity):
        # More holders than slots (the capacity was lowered): a slot opens for the
        # queue only once the surplus has stopped.
        heapq.heappop(frees)

    entries: dict[str, Estimate] = {}
    for rank, w in enumerate(queue, 1):
        at = frees[0]  # the earliest slot to free; its next holder runs from then on
        heapq.heapreplace(frees, at + run_ms(w.auto_stop_seconds))
        entries[w.id] = Estimate(rank, w.queued_at, at, (at - now_ms) // 1000)
    nxt = frees[0]
    return QueueEstimates(entries, nxt, (nxt - now_ms) // 1000)


def estimate_flavor_queue(
    flavor: Flavor,
    holders: Sequence[Holder],
    queue: Sequence[Waiter],
    *,
    now_ms: int,
    finished: Sequence[int] = (),
) -> QueueEstimates:
    """``estimate_queue`` for a catalog flavor, as the API answers it.

    The typical run length is the median of ``finished`` (the lengths in seconds of
    the scope's recent finished runs) when there are any; before any run has
    finished, it comes from the runs in progress (their ages, lower bounds of their
    lengths) and the default. Either way capped by the flavor's forced ``duration``.
    """
    ages = [(now_ms - h.running_since) // 1000 for h in holders if h.running_since is not None]
    typical = typical_run_seconds(finished, in_progress=ages, cap=flavor.duration)
    return estimate_queue(
        capacity=flavor.capacity,
        holders=holders,
        queue=queue,
        now_ms=now_ms,
        typical_seconds=typical,
        duration_seconds=flavor.duration,
    )
