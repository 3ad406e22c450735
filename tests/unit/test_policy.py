"""The lifecycle policy's judgements (domain/policy.py) and how the planner acts on them."""

from __future__ import annotations

import pytest

from demanager import errors
from demanager.domain import events
from demanager.domain.instance import AutoStop, Instance, InstanceId, ProjectId, Storage, UserId
from demanager.domain.lifecycle import InstanceStatus as S
from demanager.domain.planning import Observation, Step, Workload, plan
from demanager.domain.policy import (
    Activity,
    ActivityUnreadable,
    KernelActivity,
    Policy,
    StopReason,
    Verdict,
    extension,
    judge,
    parse_activity,
    planned_stops,
)

T0 = 1_700_000_000_000
MIN = 60_000


def running(**changes: object) -> Instance:
    base = Instance(
        id=InstanceId("DE-1"), project_id=ProjectId("p"), name="n", description="",
        profile_id="x", flavor="f", storage=Storage("evs"), extend_storage=None,
        auto_stop=AutoStop(), annotations={}, workspace_id="0", pool_id=None,
        ai_project_id="", user_id=UserId("u"), user_name="alice", status=S.RUNNING,
        desired="RUNNING", created_at=T0, updated_at=T0, running_since=T0,
    )
    return base.evolve(**changes)


IDLE = Policy(idle_timeout_ms=30 * MIN, warn_before_ms=5 * MIN, max_extension_ms=60 * MIN)
QUIET = Activity(last_activity_ms=T0 + MIN, kernels=(KernelActivity("idle", 0, T0 + 2 * MIN),))


def test_an_idle_server_stops_its_timeout_after_its_last_activity() -> None:
    [stop] = planned_stops(running(), IDLE, QUIET)
    assert stop.reason is StopReason.IDLE
    assert stop.at_ms == T0 + 2 * MIN + 30 * MIN  # the kernel's message was the latest


def test_a_busy_kernel_is_never_idle_however_old_its_last_message() -> None:
    busy = Activity(T0, (KernelActivity("busy", 0, T0), KernelActivity("idle", 0, T0)))
    assert planned_stops(running(), IDLE, busy) == []
    assert judge(running(), IDLE, busy, T0 + 10 * 60 * MIN).verdict is Verdict.NONE
    assert busy.in_use(IDLE) == "1 kernel busy"


def test_a_connected_kernel_counts_as_in_use_unless_the_operator_says_otherwise() -> None:
    tab = Activity(T0, (KernelActivity("idle", 2, T0),))
    assert planned_stops(running(), IDLE, tab) == []
    by_activity_alone = Policy(idle_timeout_ms=30 * MIN, connected_is_active=False)
    assert [s.reason for s in planned_stops(running(), by_activity_alone, tab)] == [
        StopReason.IDLE
    ]


def test_without_a_reading_nothing_is_judged_idle() -> None:
    assert planned_stops(running(), IDLE, None) == []


def test_warned_once_ahead_then_stopped_at_the_deadline() -> None:
    deadline = T0 + 32 * MIN
    assert judge(running(), IDLE, QUIET, deadline - 6 * MIN).verdict is Verdict.NONE
    ahead = judge(running(), IDLE, QUIET, deadline - 5 * MIN)
    assert ahead.verdict is Verdict.WARN and ahead.stop is not None
    warned = running(warned_for=ahead.stop.at_ms)
    assert judge(warned, IDLE, QUIET, deadline - MIN).verdict is Verdict.NONE
    assert judge(warned, IDLE, QUIET, deadline).verdict is Verdict.STOP


def test_a_deadline_reached_unannounced_is_warned_of_before_the_stop() -> None:
    late = judge(running(), IDLE, QUIET, T0 + 40 * MIN)
    assert late.verdict is Verdict.WARN
    silent = Policy(idle_timeout_ms=30 * MIN, warn_before_ms=0)
    assert judge(running(), silent, QUIET, T0 + 40 * MIN).verdict is Verdict.STOP


def test_new_activity_moves_the_stop_and_needs_a_new_warning() -> None:
    first = judge(running(), IDLE, QUIET, T0 + 28 * MIN)
    assert first.stop is not None
    warned = running(warned_for=first.stop.at_ms)
    later = Activity(T0 + 29 * MIN)
    assert judge(warned, IDLE, later, T0 + 33 * MIN).verdict is Verdict.NONE
    assert judge(warned, IDLE, later, T0 + 54 * MIN).verdict is Verdict.WARN


def test_the_earliest_deadline_wins() -> None:
    policy = Policy(idle_timeout_ms=30 * MIN, max_lifetime_ms=20 * MIN)
    instance = running(stop_at=T0 + 60 * MIN)
    reasons = [s.reason for s in planned_stops(instance, policy, QUIET)]
    assert reasons == [StopReason.MAX_LIFETIME, StopReason.IDLE, StopReason.AUTO_STOP]


def test_nothing_is_planned_for_an_instance_that_does_not_run() -> None:
    stopped = running(status=S.STOPPED, running_since=None, stop_at=T0)
    assert planned_stops(stopped, Policy(max_lifetime_ms=MIN), QUIET) == []


def test_an_extension_postpones_every_deadline() -> None:
    policy = Policy(idle_timeout_ms=30 * MIN, max_lifetime_ms=120 * MIN,
                    max_extension_ms=60 * MIN)
    instance = running(stop_at=T0 + 90 * MIN)
    changes = extension(instance, policy, 600)
    assert changes == {"extended_ms": 10 * MIN, "stop_at": T0 + 100 * MIN}
    after = instance.evolve(**changes)
    at = {s.reason: s.at_ms for s in planned_stops(after, policy, QUIET)}
    assert at == {
        StopReason.IDLE: T0 + 2 * MIN + 40 * MIN,
        StopReason.MAX_LIFETIME: T0 + 130 * MIN,
        StopReason.AUTO_STOP: T0 + 100 * MIN,
    }


def test_an_extension_past_the_limit_is_refused_saying_what_is_left() -> None:
    instance = running(extended_ms=50 * MIN)
    with pytest.raises(errors.ExtensionRefused, match="at most 600 more seconds"):
        extension(instance, IDLE, 601)
    assert extension(instance, IDLE, 600)["extended_ms"] == 60 * MIN
    with pytest.raises(errors.ExtensionRefused, match="no extensions"):
        extension(instance, Policy(idle_timeout_ms=MIN), 1)


def test_an_instance_nothing_stops_has_nothing_to_extend() -> None:
    with pytest.raises(errors.NothingToExtend):
        extension(running(), Policy(max_extension_ms=MIN), 1)


@pytest.mark.parametrize(
    ("status", "kernels"),
    [
        ([], []),
        ({}, {}),
        ({}, "kernels"),
        ({}, [1]),
        ({}, [{"connections": 0}]),
        ({}, [{"execution_state": "idle", "connections": "many"}]),
        ({"last_activity": 17}, []),
        ({"last_activity": "yesterday"}, []),
        ({"last_activity": "x" * 100}, []),
    ],
)
def test_answers_off_jupyters_shape_are_unreadable(status: object, kernels: object) -> None:
    with pytest.raises(ActivityUnreadable):
        parse_activity(status, kernels, T0)


def test_jupyters_answers_are_read_and_the_future_is_now() -> None:
    activity = parse_activity(
        {"started": "2023-11-14T22:00:00Z", "last_activity": "2023-11-14T22:13:20.000000Z"},
        [
            {"id": "k", "execution_state": "busy", "connections": 1,
             "last_activity": "2099-01-01T00:00:00+00:00"},
            {"id": "j", "execution_state": "idle", "connections": 0},
        ],
        T0,
    )
    assert activity.last_activity_ms == T0
    assert activity.kernels == (KernelActivity("busy", 1, T0), KernelActivity("idle", 0, None))


def test_the_planner_stops_warns_or_auto_stops_as_judged() -> None:
    ready = Observation[object](Workload.READY)
    stop = judge(running(warned_for=T0 + 32 * MIN), IDLE, QUIET, T0 + 33 * MIN)
    assert plan(running(), ready, T0 + 33 * MIN, judgement=stop) is Step.POLICY_STOP
    warn = judge(running(), IDLE, QUIET, T0 + 28 * MIN)
    assert plan(running(), ready, T0 + 28 * MIN, judgement=warn) is Step.WARN_STOP
    # A notebook that is gone is seen to first; the warning waits for it.
    gone = Observation[object](Workload.ABSENT)
    assert plan(running(), gone, T0 + 28 * MIN, judgement=warn) is Step.MARK_UNAVAILABLE
    countdown = running(stop_at=T0 + MIN, warned_for=T0 + MIN)
    due = judge(countdown, Policy(), None, T0 + MIN)
    assert plan(countdown, ready, T0 + MIN, judgement=due) is Step.AUTO_STOP


def test_the_events_say_why_and_who() -> None:
    stop = judge(running(), IDLE, QUIET, T0 + 28 * MIN).stop
    assert stop is not None
    warning = events.stop_warning(stop, T0 + 28 * MIN)
    assert warning.kind is events.EventKind.AUTO_STOP_WARNING
    assert warning.actor == "policy:idle"
    assert warning.message.startswith("Will stop in 4 min: nothing used it for 30 min")
    assert warning.detail["stop_at"] == stop.at_ms
    request = events.policy_stop(stop)
    assert request.kind is events.EventKind.STOP_REQUESTED
    assert request.detail["reason"] == "idle: nothing used it for 30 min (no kernel busy)"
