"""How long does estimating a whole free-flavor queue take? (target: 1,000 queued well under 50 ms)

Prints, for queues of 1,000 and 10,000 instances behind a full flavor, the median
and worst time of one ``estimate_queue`` call (every rank and admission estimate,
plus the newcomer's wait), over several rounds. Holders mix known deadlines and
unknown ones; waiters mix auto-stop and none. Pure computation, no store.

    .venv/bin/python bench/queue_estimates.py [--capacity 50] [--rounds 20]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from demanager.domain.lifecycle import InstanceStatus
from demanager.domain.queueing import Holder, Waiter, estimate_queue, typical_run_seconds

NOW = 1_800_000_000_000


def inputs(capacity: int, queued: int, rng: random.Random) -> tuple[list[Holder], list[Waiter]]:
    holders = []
    for _ in range(capacity):
        since = NOW - rng.randrange(0, 3_600_000)
        stop_at = since + 3_600_000 if rng.random() < 0.5 else None
        holders.append(Holder(InstanceStatus.RUNNING, since, stop_at))
    queue = [
        Waiter(f"DE-{i:08d}", NOW - (queued - i) * 1000, rng.choice([None, 3600, 7200]))
        for i in range(queued)
    ]
    return holders, queue


def measure(capacity: int, queued: int, rounds: int) -> tuple[float, float]:
    rng = random.Random(7)
    holders, queue = inputs(capacity, queued, rng)
    ages = [(NOW - h.running_since) // 1000 for h in holders if h.running_since is not None]
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        typical = typical_run_seconds(in_progress=ages)
        est = estimate_queue(
            capacity=capacity, holders=holders, queue=queue, now_ms=NOW, typical_seconds=typical
        )
        times.append((time.perf_counter() - start) * 1000)
        assert len(est.entries) == queued
    return statistics.median(times), max(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--capacity", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    for queued in (1_000, 10_000):
        median, worst = measure(args.capacity, queued, args.rounds)
        print(
            f"estimate_queue  capacity {args.capacity:<5} queued {queued:>6,}  "
            f"median {median:7.2f} ms  worst {worst:7.2f} ms  (rounds={args.rounds})"
        )


if __name__ == "__main__":
    main()
