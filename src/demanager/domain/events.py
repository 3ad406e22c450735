"""The event log's vocabulary: what happened to an instance, who made it happen, and
the sentence a person reads about it. Pure: no clock, no store.

An event is derived from a status write (``for_transition``) or stated by the engine
for a step that writes no status (``launched``). The store appends it in the
transaction of that write, so an event exists exactly when its change does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from demanager.domain.instance import Instance
from demanager.domain.lifecycle import QUEUED, InstanceStatus
from demanager.domain.policy import PlannedStop, StopReason

S = InstanceStatus


class EventKind(StrEnum):
    CREATED = "created"
    QUEUED = "queued"
    ADMITTED = "admitted"
    START_REQUESTED = "start_requested"
    RESTART_REQUESTED = "restart_requested"
    LAUNCHED = "launched"
    READY = "ready"
    HEALTH_LOST = "health_lost"
    HEALTH_REGAINED = "health_regained"
    AUTO_STOP_WARNING = "auto_stop_warning"
    """A stop is coming (any policy's: auto-stop, idle, lifetime), and why."""
    EXTENDED = "extended"
    """The user postponed the run's stops."""
    STOP_REQUESTED = "stop_requested"
    STOPPED = "stopped"
    FAILED = "failed"
    ADOPTED = "adopted"
    """A server that (re)started found the workload running and took it over."""
    DELETED = "deleted"


ENGINE = "engine"
"""The actor of what the engine does on its own, without a caller or policy behind it."""
AUTO_STOP = "policy:auto_stop"
RESERVATION = "policy:reservation"
RETENTION = "policy:retention"


def policy(reason: StopReason) -> str:
    """The actor of a stop the lifecycle policy makes for ``reason``."""
    return f"policy:{reason.value}"


def user(name: str) -> str:
    return f"user:{name}"


#: Kinds whose event explains the failure the instance then carries (failed_reasons).
EXPLAINS_FAILURE: frozenset[EventKind] = frozenset({EventKind.FAILED, EventKind.HEALTH_LOST})

FAILURE_DETAIL_KEY = "event_id"
"""Key in ``failed_reasons.detail`` naming the event that explains the failure."""


@dataclass(frozen=True)
class EventDraft:
    """An event before the store gives it its id and time."""

    kind: EventKind
    actor: str
    message: str
    code: str | None = None
    detail: Mapping[str, str | int] = field(default_factory=dict)


@dataclass(frozen=True)
class Event:
    id: int
    instance_id: str
    project_id: str
    user_id: str
    at_ms: int
    kind: EventKind
    actor: str
    message: str
    code: str | None
    detail: Mapping[str, str | int]


def _who(actor: str) -> str:
    kind, _, name = actor.partition(":")
    if kind == "user":
        return f"user {name}"
    if kind == "policy":
        return f"the {name.replace('_', '-')} policy"
    return "the engine"


def created(instance: Instance, actor: str) -> EventDraft:
    return EventDraft(
        EventKind.CREATED,
        actor,
        f"Created by {_who(actor)} with flavor {instance.flavor}.",
        detail={"flavor": instance.flavor},
    )


def queued(actor: str, rank: int) -> EventDraft:
    return EventDraft(
        EventKind.QUEUED,
        actor,
        f"Queued for a free slot, number {rank} in line.",
        detail={"rank": rank},
    )


def launched(attempt: int) -> EventDraft:
    what = "Launched the notebook server" if attempt <= 1 else (
        f"Launched the notebook server again (try {attempt})"
    )
    return EventDraft(EventKind.LAUNCHED, ENGINE, f"{what}.", detail={"attempt": attempt})


def adopted() -> EventDraft:
    return EventDraft(
        EventKind.ADOPTED,
        ENGINE,
        "Found the notebook server still running after a server start; took it over.",
    )


def stopped(requested_by: str, reason: str) -> EventDraft:
    return EventDraft(
        EventKind.STOPPED,
        requested_by,
        f"Stopped; {_who(requested_by)} asked for it ({reason}).",
        detail={"reason": reason},
    )


def stop_warning(stop: PlannedStop, now_ms: int) -> EventDraft:
    left = max(0, stop.at_ms - now_ms) // 1000
    when = f"in {_minutes(left)}" if left else "now"
    return EventDraft(
        EventKind.AUTO_STOP_WARNING,
        policy(stop.reason),
        f"Will stop {when}: {stop.why}. Extend the run to keep it.",
        detail={"reason": stop.reason.value, "stop_at": stop.at_ms, "why": stop.why},
    )


def policy_stop(stop: PlannedStop) -> EventDraft:
    """The stop request of a policy stop other than the countdown's."""
    reason = f"{stop.reason.value.replace('_', ' ')}: {stop.why}"
    return EventDraft(
        EventKind.STOP_REQUESTED,
        policy(stop.reason),
        f"Stop requested by {_who(policy(stop.reason))} ({reason}).",
        detail={"reason": reason},
    )


def extended(actor: str, seconds: int, total_s: int, next_stop: PlannedStop | None) -> EventDraft:
    after = (
        f"; the next stop is the {stop_name(next_stop.reason)}" if next_stop is not None else ""
    )
    return EventDraft(
        EventKind.EXTENDED,
        actor,
        f"Extended by {_minutes(seconds)} by {_who(actor)} ({_minutes(total_s)} in this run)"
        f"{after}.",
        detail={"seconds": seconds, "total_s": total_s},
    )


def stop_name(reason: StopReason) -> str:
    return {
        StopReason.AUTO_STOP: "auto-stop",
        StopReason.IDLE: "idle stop",
        StopReason.MAX_LIFETIME: "lifetime limit",
    }[reason]


def _minutes(seconds: int) -> str:
    if seconds >= 120:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def for_transition(
    before: Instance, after: Instance, *, actor: str, now_ms: int, rank: int | None = None
) -> EventDraft | None:
    """The event of the status write ``before`` -> ``after`` by ``actor``; None for a
    write that tells nothing new (a step between two events of its own).

    A move to STOPPED out of STOPPING is not built here: its actor is whoever asked for
    the stop, which the store reads back from the ``stop_requested`` event.
    """
    old, new = before.status, after.status
    if old is new:
        return None
    if new in QUEUED:
        return queued(actor, rank or 1)
    if old in QUEUED and new in (S.CREATING, S.READY_TO_START):
        waited = max(0, now_ms - (after.requested_at or after.created_at)) // 1000
        return EventDraft(
            EventKind.ADMITTED, actor, f"Admitted after {waited} s in the queue.",
            detail={"waited_s": waited},
        )
    if new is S.RUNNING:
        if old is S.UNAVAILABLE:
            return EventDraft(
                EventKind.HEALTH_REGAINED, actor, "The notebook server answers again."
            )
        started = after.requested_at or after.created_at
        took_ms = max(0, now_ms - started)
        return EventDraft(
            EventKind.READY,
            actor,
            f"Ready: the notebook server answered {took_ms / 1000:.1f} s after the request.",
            detail={"start_ms": took_ms},
        )
    if new is S.UNAVAILABLE:
        return EventDraft(
            EventKind.HEALTH_LOST, actor, _failure_text(after, "The notebook server fails"),
            code=after.failed.code if after.failed else None,
            detail=dict(after.failed.detail) if after.failed else {},
        )
    if new in (S.CREATE_FAILED, S.START_FAILED, S.RESIZE_FAILED):
        return EventDraft(
            EventKind.FAILED, actor, _failure_text(after, f"{new.value}"),
            code=after.failed.code if after.failed else None,
            detail=dict(after.failed.detail) if after.failed else {},
        )
    if new is S.STARTING and old is not S.READY_TO_START:
        return EventDraft(EventKind.START_REQUESTED, actor, f"Start requested by {_who(actor)}.")
    if new is S.RESTARTING:
        return EventDraft(
            EventKind.RESTART_REQUESTED, actor, f"Restart requested by {_who(actor)}."
        )
    if new is S.STOPPING:
        reason = "auto-stop: the run reached its time" if actor == AUTO_STOP else "stop"
        return EventDraft(
            EventKind.STOP_REQUESTED, actor, f"Stop requested by {_who(actor)} ({reason}).",
            detail={"reason": reason},
        )
    if new is S.STOPPED and old is not S.STOPPING:
        if actor == RESERVATION:
            return stopped(actor, "the reserved slot was not used in time")
        return stopped(actor, "dequeue" if old in QUEUED else "stop")
    if new is S.DELETED:
        why = " (inactive longer than its flavor keeps instances)" if actor == RETENTION else ""
        return EventDraft(EventKind.DELETED, actor, f"Deleted by {_who(actor)}{why}.")
    return None


def _failure_text(after: Instance, prefix: str) -> str:
    if after.failed is None:
        return f"{prefix}."
    return f"{prefix}: {after.failed.message} ({after.failed.code})"
