"""Observed run lengths: recorded as a run leaves RUNNING, and fed to the estimates."""

from __future__ import annotations

from demanager.domain.catalog import Flavor
from demanager.domain.instance import Instance
from demanager.domain.lifecycle import InstanceStatus as S
from demanager.domain.queueing import Holder, Waiter, estimate_flavor_queue
from demanager.store.instances import InstanceRepository
from tests.unit.test_capacity_store import _instance, database, repo  # noqa: F401 (fixtures)

T0 = 1_700_000_000_000
FLAVOR = Flavor("free", "CPU", {}, promo_type="Free", capacity=1)


async def _running(
    store: InstanceRepository, n: int, since: int, pool: str | None = None
) -> Instance:
    created = _instance(n, S.CREATING, pool=pool)
    await store.add(created, project_quota=100, flavor_quota=None)
    return await store.transition(created, S.RUNNING, now_ms=since, running_since=since)


async def test_leaving_running_records_the_run_length(repo: InstanceRepository) -> None:  # noqa: F811
    running = await _running(repo, 1, T0)
    stopping = await repo.transition(running, S.STOPPING, now_ms=T0 + 90_000)
    assert stopping.last_run_ms == 90_000
    stopped = await repo.transition(stopping, S.STOPPED, now_ms=T0 + 95_000, running_since=None)
    assert stopped.last_run_ms == 90_000  # a later write keeps it

    other = await _running(repo, 2, T0, pool="small")
    await repo.transition(other, S.UNAVAILABLE, now_ms=T0 + 30_000)

    holders, queue, finished = await repo.queue_state("flav")
    assert (holders, queue, finished) == ([], [], [90])
    assert (await repo.queue_state("flav", "small"))[2] == [30]


def test_estimates_use_the_median_of_finished_runs() -> None:
    holder = Holder(S.RUNNING, running_since=T0, stop_at=None)
    queue = [Waiter("DE-w", T0)]
    guessed = estimate_flavor_queue(FLAVOR, [holder], queue, now_ms=T0)
    assert guessed.entries["DE-w"].end_timestamp == T0 + 3600_000  # the default hour
    observed = estimate_flavor_queue(
        FLAVOR, [holder], queue, now_ms=T0, finished=[600, 1200, 9000]
    )
    assert observed.entries["DE-w"].end_timestamp == T0 + 1200_000
