"""``domain/planning.plan``: the reconciler's decisions, table-driven, no I/O."""

from __future__ import annotations

import pytest

from demanager.domain.instance import (
    AutoStop,
    Desired,
    FailedReason,
    Instance,
    InstanceId,
    ProjectId,
    Storage,
    UserId,
)
from demanager.domain.lifecycle import InstanceStatus as S
from demanager.domain.planning import UNANSWERED_KEY, Observation, Step, Workload, plan

NOW = 1_700_000_000_000
ABSENT, BOOTING, READY = Workload.ABSENT, Workload.BOOTING, Workload.READY


def instance(status: S, *, desired: str = Desired.RUNNING, stop_at: int | None = None,
             requested_at: int | None = None, cleanup_pending: bool = False,
             handle: dict[str, object] | None = None, running_since: int | None = None,
             ) -> Instance:
    return Instance(
        id=InstanceId("DE-1"), project_id=ProjectId("p"), name="nb", description="",
        profile_id="prof", flavor="flav", storage=Storage("evs"), extend_storage=None,
        auto_stop=AutoStop(), annotations={}, workspace_id="0", pool_id=None,
        ai_project_id="default-ai-project", user_id=UserId("u" * 32), user_name="u",
        status=status, desired=desired, created_at=NOW - 10_000, updated_at=NOW - 10_000,
        stop_at=stop_at, requested_at=requested_at, cleanup_pending=cleanup_pending,
        handle=handle, running_since=running_since,
    )


CASES = [
    # bringing up: launch, wait for the health check, then RUNNING
    (S.CREATING, {}, Observation(ABSENT), Step.LAUNCH),
    (S.CREATING, {}, Observation(BOOTING, NOW - 1), Step.WAIT),
    (S.CREATING, {}, Observation(READY, NOW - 1), Step.MARK_RUNNING),
    (S.STARTING, {}, Observation(ABSENT), Step.LAUNCH),
    (S.STARTING, {}, Observation(BOOTING), Step.WAIT),
    (S.STARTING, {}, Observation(READY), Step.MARK_RUNNING),
    (S.READY_TO_START, {}, Observation(ABSENT), Step.MARK_STARTING),
    (S.READY_TO_START, {}, Observation(READY), Step.MARK_STARTING),
    # restart: a workload launched before the request is stale and relaunched
    (S.RESTARTING, {"requested_at": NOW - 5}, Observation(READY, NOW - 100), Step.RELAUNCH),
    (S.RESTARTING, {"requested_at": NOW - 5}, Observation(BOOTING, NOW - 100), Step.RELAUNCH),
    (S.RESTARTING, {"requested_at": NOW - 5}, Observation(READY, None), Step.RELAUNCH),
    (S.RESTARTING, {"requested_at": NOW - 5}, Observation(READY, NOW - 5), Step.MARK_RUNNING),
    (S.RESTARTING, {"requested_at": NOW - 5}, Observation(BOOTING, NOW - 1), Step.WAIT),
    (S.RESTARTING, {"requested_at": NOW - 5}, Observation(ABSENT), Step.LAUNCH),
    (S.RESTARTING, {}, Observation(READY, NOW - 100), Step.MARK_RUNNING),
    # running: auto-stop when due, fault when the workload vanished
    (S.RUNNING, {}, Observation(READY), Step.NOTHING),
    (S.RUNNING, {}, Observation(BOOTING), Step.COUNT_UNANSWERED),
    (S.RUNNING, {"stop_at": NOW + 1}, Observation(READY), Step.NOTHING),
    (S.RUNNING, {"stop_at": NOW}, Observation(READY), Step.AUTO_STOP),
    (S.RUNNING, {"stop_at": NOW - 1}, Observation(READY), Step.AUTO_STOP),
    (S.RUNNING, {"stop_at": NOW - 1}, Observation(ABSENT), Step.AUTO_STOP),
    (S.RUNNING, {}, Observation(ABSENT), Step.MARK_UNAVAILABLE),
    (S.RUNNING, {"stop_at": NOW + 1}, Observation(ABSENT), Step.MARK_UNAVAILABLE),
    # unavailable: recover when wanted running, else leave it to the caller
    (S.UNAVAILABLE, {}, Observation(READY), Step.MARK_RUNNING),
    (S.UNAVAILABLE, {}, Observation(ABSENT), Step.LAUNCH),
    (S.UNAVAILABLE, {}, Observation(BOOTING), Step.WAIT),
    (S.UNAVAILABLE, {"desired": Desired.STOPPED}, Observation(ABSENT), Step.NOTHING),
    (S.UNAVAILABLE, {"desired": Desired.STOPPED}, Observation(READY), Step.NOTHING),
    # stopping: halt what runs, then STOPPED
    (S.STOPPING, {}, Observation(READY), Step.HALT),
    (S.STOPPING, {}, Observation(BOOTING), Step.HALT),
    (S.STOPPING, {"desired": Desired.STOPPED}, Observation(ABSENT), Step.MARK_STOPPED),
    # deleted: destroy once
    (S.DELETED, {"cleanup_pending": True}, Observation(ABSENT), Step.DESTROY),
    (S.DELETED, {"cleanup_pending": True}, Observation(READY), Step.DESTROY),
    (S.DELETED, {}, Observation(ABSENT), Step.NOTHING),
    (S.DELETED, {}, Observation(READY), Step.NOTHING),
]

RESTING = [S.STOPPED, S.CREATE_FAILED, S.START_FAILED, S.RESIZE_FAILED, S.CREATE_QUEUING,
           S.START_QUEUING, S.RESIZING]
CASES += [(status, {}, Observation(ABSENT), Step.NOTHING) for status in RESTING]
CASES += [(status, {}, Observation(w), Step.HALT) for status in RESTING for w in (BOOTING, READY)]


@pytest.mark.parametrize(("status", "fields", "observed", "step"), CASES,
                         ids=[f"{c[0].value}-{c[2].workload.value}-{c[3].value}-{i}"
                              for i, c in enumerate(CASES)])
def test_plan(status: S, fields: dict[str, object], observed: Observation, step: Step) -> None:
    assert plan(instance(status, **fields), observed, NOW) is step  # type: ignore[arg-type]


def test_every_status_is_planned() -> None:
    planned = {c[0] for c in CASES}
    assert planned == set(S)


@pytest.mark.parametrize("status", list(S))
@pytest.mark.parametrize("workload", list(Workload))
def test_plan_is_total_and_pure(status: S, workload: Workload) -> None:
    subject = instance(status, requested_at=NOW - 5, stop_at=NOW + 10)
    first = plan(subject, Observation(workload, NOW - 1), NOW)
    assert isinstance(first, Step)
    assert plan(subject, Observation(workload, NOW - 1), NOW) is first
    assert subject == instance(status, requested_at=NOW - 5, stop_at=NOW + 10)


@pytest.mark.parametrize("status", [S.CREATE_QUEUING, S.START_QUEUING])
def test_a_queued_instance_waits_until_it_is_admissible(status: S) -> None:
    queued = instance(status)
    absent = Observation(Workload.ABSENT)
    assert plan(queued, absent, NOW) is Step.NOTHING
    assert plan(queued, absent, NOW, admissible=True) is Step.ADMIT
    # Something running behind a queued instance is stopped, admissible or not.
    running = Observation(Workload.READY)
    assert plan(queued, running, NOW, admissible=True) is Step.HALT


MISSED = UNANSWERED_KEY


@pytest.mark.parametrize(("fields", "observed", "step"), [
    # RUNNING, alive but not answering: counted, then UNAVAILABLE at the third miss
    ({}, Observation(BOOTING, NOW - 100), Step.COUNT_UNANSWERED),
    ({"handle": {MISSED: 1}}, Observation(BOOTING, NOW - 100), Step.COUNT_UNANSWERED),
    ({"handle": {MISSED: 2}}, Observation(BOOTING, NOW - 100), Step.MARK_UNAVAILABLE),
    ({"handle": {MISSED: 7}}, Observation(BOOTING, NOW - 100), Step.MARK_UNAVAILABLE),
    # answering again before that: the count starts afresh (no write when it is zero)
    ({"handle": {MISSED: 2}}, Observation(READY, NOW - 100), Step.RESET_UNANSWERED),
    ({"handle": {MISSED: 0}}, Observation(READY, NOW - 100), Step.NOTHING),
    # the countdown still wins
    ({"handle": {MISSED: 2}, "stop_at": NOW}, Observation(BOOTING), Step.AUTO_STOP),
], ids=lambda v: str(v))
def test_defect_02_a_running_workload_that_stops_answering(
    fields: dict[str, object], observed: Observation, step: Step
) -> None:
    subject = instance(S.RUNNING, running_since=NOW - 50, **fields)  # type: ignore[arg-type]
    assert plan(subject, observed, NOW) is step


def test_defect_02_health_failures_is_a_setting() -> None:
    hung = instance(S.RUNNING, handle={MISSED: 2})
    assert plan(hung, Observation(BOOTING), NOW, health_failures=5) is Step.COUNT_UNANSWERED
    assert plan(hung, Observation(BOOTING), NOW, health_failures=1) is Step.MARK_UNAVAILABLE
    assert plan(instance(S.RUNNING), Observation(BOOTING), NOW, health_failures=1) is (
        Step.MARK_UNAVAILABLE)


def test_defect_02_an_unresponsive_workload_is_waited_for_not_relaunched() -> None:
    # The workload that ran before the fault is left to answer again (no start timeout);
    # one relaunched after the fault must answer within the start timeout (WAIT).
    fault = instance(S.UNAVAILABLE, running_since=NOW - 50)
    assert plan(fault, Observation(BOOTING, NOW - 100), NOW) is Step.NOTHING
    assert plan(fault, Observation(BOOTING, NOW - 10), NOW) is Step.WAIT
    assert plan(fault, Observation(BOOTING, None), NOW) is Step.WAIT
    assert plan(fault, Observation(READY, NOW - 100), NOW) is Step.MARK_RUNNING


@pytest.mark.parametrize("status", [S.CREATING, S.STARTING, S.RESTARTING, S.UNAVAILABLE])
@pytest.mark.parametrize("workload", [ABSENT, BOOTING])
def test_a_workload_that_can_never_come_up_fails_the_start(status: S, workload: Workload) -> None:
    # An image that cannot be pulled: failing now beats waiting out the start timeout.
    reason = FailedReason("ModelArts.6361", "image x:1 cannot be pulled")
    assert plan(instance(status), Observation(workload, failure=reason), NOW) is Step.FAIL


@pytest.mark.parametrize("status", [S.RUNNING, S.STOPPED, S.STOPPING, S.START_FAILED])
def test_a_failure_is_only_acted_on_while_launching(status: S) -> None:
    reason = FailedReason("ModelArts.6361", "image x:1 cannot be pulled")
    observed = Observation(ABSENT, failure=reason)
    assert plan(instance(status), observed, NOW) is plan(instance(status), Observation(ABSENT), NOW)


OOM = FailedReason("ModelArts.6361", "killed at the memory limit", {"cause": "oom_killed"})


def test_a_warning_of_a_running_workload_is_kept_once() -> None:
    running = instance(S.RUNNING)
    assert plan(running, Observation(READY, warning=OOM), NOW) is Step.WARN
    shown = running.evolve(failed=OOM)
    assert plan(shown, Observation(READY, warning=OOM), NOW) is Step.NOTHING
    other = FailedReason("ModelArts.6361", "killed again", {"cause": "oom_killed"})
    assert plan(shown, Observation(READY, warning=other), NOW) is Step.WARN
    # No warning now does not take the shown one away: it stays for the run.
    assert plan(shown, Observation(READY), NOW) is Step.NOTHING


def test_a_warning_never_makes_a_running_workload_unavailable() -> None:
    running = instance(S.RUNNING)
    assert plan(running, Observation(BOOTING, warning=OOM), NOW) is Step.COUNT_UNANSWERED
    assert plan(running, Observation(READY, warning=OOM), NOW) is not Step.MARK_UNAVAILABLE
    assert plan(instance(S.CREATING), Observation(READY, warning=OOM), NOW) is Step.MARK_RUNNING
