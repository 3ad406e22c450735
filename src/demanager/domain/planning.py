"""The reconciler's decisions as one pure function.

``plan(instance, observed, now_ms)`` looks at what the store says the instance
should be and what the backend says exists, and names the single next step.
The reconciler performs that step, persists the result and plans again, so a
crash between any two steps is repaired by planning from scratch.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Generic, TypeVar

from demanager.domain.instance import Desired, Endpoint, FailedReason, Instance
from demanager.domain.lifecycle import QUEUED
from demanager.domain.lifecycle import InstanceStatus as S
from demanager.domain.policy import Judgement, StopReason, Verdict


class Workload(Enum):
    """What the backend reports about an instance's workload."""

    ABSENT = "absent"
    """Nothing runs (never started, exited, or removed)."""
    BOOTING = "booting"
    """Alive but not answering its health check yet."""
    READY = "ready"
    """Answering its health check."""


class Step(Enum):
    NOTHING = "nothing"
    WAIT = "wait"
    """Something is in progress; observe again soon."""
    LAUNCH = "launch"
    """Start the workload (create the volume first if needed)."""
    RELAUNCH = "relaunch"
    """Stop a stale workload, then launch a fresh one (restart)."""
    MARK_RUNNING = "mark_running"
    MARK_STARTING = "mark_starting"
    MARK_UNAVAILABLE = "mark_unavailable"
    COUNT_UNANSWERED = "count_unanswered"
    """A RUNNING workload missed a health probe, not yet enough of them in a row."""
    RESET_UNANSWERED = "reset_unanswered"
    """It answered again before it was marked UNAVAILABLE: start the count afresh."""
    AUTO_STOP = "auto_stop"
    """The countdown ran out: RUNNING -> STOPPING."""
    POLICY_STOP = "policy_stop"
    """The lifecycle policy stops the run (idle, or past its maximum lifetime):
    RUNNING -> STOPPING, saying why."""
    WARN_STOP = "warn_stop"
    """Announce the run's next stop, with its reason, before it comes."""
    HALT = "halt"
    """Stop the workload, keep the volume."""
    MARK_STOPPED = "mark_stopped"
    DESTROY = "destroy"
    """Remove the workload and the volume of a deleted instance."""
    FAIL = "fail"
    """The backend says the launched workload can never come up: fail the start."""
    WARN = "warn"
    """A RUNNING workload brings a warning the instance does not show yet (a process
    killed at the memory limit): keep it in ``failed_reasons``; the instance runs on."""
    ADMIT = "admit"
    """A queued instance got its slot: CREATE_QUEUING -> CREATING,
    START_QUEUING -> READY_TO_START."""
    LAPSE = "lapse"
    """A reservation that cannot be used (the instance is frozen) or was not used in
    time: READY_TO_START -> STOPPED, giving the slot to the next in line."""


H = TypeVar("H")


@dataclass(frozen=True)
class Observation(Generic[H]):
    workload: Workload
    launched_at: int | None = None
    """ms at which the observed workload was launched, when known."""
    handle: H | None = None
    """The workload's handle (the backend's own type), when the backend found it without
    being given one (a crash between launching and persisting the handle)."""
    endpoint: Endpoint | None = None
    """Where the proxy reaches the workload, when it is READY."""
    volume_bytes: int | None = None
    """Bytes the instance's own volume holds, when the backend measured them."""
    failure: FailedReason | None = None
    """Why the workload can never come up as launched (its image cannot be pulled, its
    spec is refused): the engine fails the start with it instead of waiting it out."""
    warning: FailedReason | None = None
    """Something the user should know while the notebook runs (a process of it was
    killed at the flavor's memory limit): kept in ``failed_reasons`` while it runs."""


_BRINGING_UP = frozenset({S.CREATING, S.STARTING})
_LAUNCHING = _BRINGING_UP | {S.RESTARTING, S.UNAVAILABLE}

UNANSWERED_KEY = "unanswered_probes"
"""Key in the instance's stored handle that counts the health probes a RUNNING workload
missed in a row. It lives in the row, not in memory, so a restarted engine goes on
counting where the last one stopped."""

DEFAULT_HEALTH_FAILURES = 3

DEFAULT_RESERVATION_MS = 60_000
"""How long a reserved slot (READY_TO_START) waits for its start before it lapses."""


def unanswered(instance: Instance) -> int:
    """Health probes the instance's workload has missed in a row."""
    value = (instance.handle or {}).get(UNANSWERED_KEY, 0)
    return value if isinstance(value, int) else 0


def plan(
    instance: Instance,
    observed: Observation[Any],
    now_ms: int,
    *,
    admissible: bool = False,
    health_failures: int = DEFAULT_HEALTH_FAILURES,
    reservation_ms: int = DEFAULT_RESERVATION_MS,
    judgement: Judgement | None = None,
) -> Step:
    """The next step for ``instance``; ``admissible`` says a queued instance may take a
    slot of its flavor now (it is first in line and the flavor has room);
    ``health_failures`` is how many probes in a row a RUNNING workload may miss before
    it is UNAVAILABLE; ``reservation_ms`` is how long a reserved slot waits for its
    start; ``judgement`` is the lifecycle policy's verdict on a RUNNING instance
    (``domain/policy.py``; without one, only the auto-stop countdown counts)."""
    status = instance.status
    work = observed.workload

    if status is S.DELETED:
        return Step.DESTROY if instance.cleanup_pending else Step.NOTHING

    if status is S.READY_TO_START:
        return Step.LAPSE if reservation_lapsed(instance, now_ms, reservation_ms) else (
            Step.MARK_STARTING
        )

    if status in QUEUED and work is Workload.ABSENT:
        # A frozen instance keeps its place but is never admitted (it may not start).
        return Step.ADMIT if admissible and not instance.frozen else Step.NOTHING

    if observed.failure is not None and status in _LAUNCHING:
        return Step.FAIL

    if status in _BRINGING_UP:
        return _bring_up(work)

    if status is S.RESTARTING:
        stale = (
            work is not Workload.ABSENT
            and instance.requested_at is not None
            and (observed.launched_at or 0) < instance.requested_at
        )
        return Step.RELAUNCH if stale else _bring_up(work)

    if status is S.RUNNING:
        if judgement is None:
            if instance.stop_at is not None and now_ms >= instance.stop_at:
                return Step.AUTO_STOP
        elif judgement.verdict is Verdict.STOP and judgement.stop is not None:
            if judgement.stop.reason is StopReason.AUTO_STOP:
                return Step.AUTO_STOP
            return Step.POLICY_STOP
        if work is Workload.ABSENT:
            return Step.MARK_UNAVAILABLE
        if work is Workload.BOOTING:  # alive but not answering: hung, or overloaded
            if unanswered(instance) + 1 >= health_failures:
                return Step.MARK_UNAVAILABLE
            return Step.COUNT_UNANSWERED
        if unanswered(instance):
            return Step.RESET_UNANSWERED
        if observed.warning is not None and observed.warning != instance.failed:
            return Step.WARN
        if judgement is not None and judgement.verdict is Verdict.WARN:
            return Step.WARN_STOP
        return Step.NOTHING

    if status is S.UNAVAILABLE:
        if instance.desired != Desired.RUNNING:
            return Step.NOTHING
        if work is Workload.READY:
            return Step.MARK_RUNNING
        if work is Workload.ABSENT:
            return Step.LAUNCH
        # The workload that stopped answering may answer again (it is not relaunched:
        # that would lose the user's kernels); later sweeps probe it. A relaunched one
        # is booting and must answer within the start timeout.
        return Step.NOTHING if _stopped_answering(instance, observed) else Step.WAIT

    if status is S.STOPPING:
        return Step.MARK_STOPPED if work is Workload.ABSENT else Step.HALT

    # Resting statuses (STOPPED, *_FAILED, queued): nothing may run behind them.
    return Step.HALT if work is not Workload.ABSENT else Step.NOTHING


def reservation_lapsed(instance: Instance, now_ms: int, reservation_ms: int) -> bool:
    """A READY_TO_START instance's reservation is of no use any more: the instance is
    frozen (it may not start, and holding the slot would keep the next in line waiting
    for nothing), or nobody started it within ``reservation_ms`` (its replica died and
    none took over in time). A reservation without a time (a row written before
    reservations were recorded) is used, never lapsed."""
    if instance.frozen:
        return True
    return instance.reserved_at is not None and now_ms - instance.reserved_at >= reservation_ms


def _stopped_answering(instance: Instance, observed: Observation[Any]) -> bool:
    """The observed workload is the one that ran before the fault, not a relaunch."""
    return (
        instance.running_since is not None
        and observed.launched_at is not None
        and observed.launched_at <= instance.running_since
    )


def _bring_up(work: Workload) -> Step:
    if work is Workload.READY:
        return Step.MARK_RUNNING
    if work is Workload.BOOTING:
        return Step.WAIT
    return Step.LAUNCH
