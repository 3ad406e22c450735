"""The lifecycle policy beyond the contract's auto-stop: when a run must stop, and
why, from its deadlines and from Jupyter's own account of its activity. Pure: the
engine reads the activity and the clock, and acts on the verdict.

A run may have several deadlines at once; the earliest wins:

* ``auto_stop``: the contract's countdown, or a free flavor's forced duration
  (``Instance.stop_at``, set when the run starts);
* ``max_lifetime``: the operator's hard limit on one run;
* ``idle``: no activity for the operator's idle timeout. Activity is Jupyter's own:
  the server's ``last_activity`` (API calls, terminals, kernel messages) and each
  kernel's. A busy kernel is never idle, whatever its last message; a kernel with
  an open connection (a browser tab) counts as in use unless the operator says
  otherwise. Without a reading of the activity (not read yet, or the server did not
  answer) nothing is judged idle: an unknown is never a reason to stop.

An extension postpones every deadline of the current run by its seconds, up to the
operator's limit per run: the countdown's ``stop_at`` moves, and the run's
``extended_ms`` lengthens both the lifetime and the idle allowance.

A policy stop is always announced: a warning comes ``warn_before_ms`` ahead, and a
deadline reached without its warning (it moved closer at once, or the engine was
down) is warned about first and stopped on the next look.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum, StrEnum
from typing import Any

from demanager import errors
from demanager.domain.instance import Instance
from demanager.domain.lifecycle import InstanceStatus


class StopReason(StrEnum):
    AUTO_STOP = "auto_stop"
    IDLE = "idle"
    MAX_LIFETIME = "max_lifetime"


@dataclass(frozen=True)
class Policy:
    """The operator's policy; a zero turns its part off."""

    idle_timeout_ms: int = 0
    max_lifetime_ms: int = 0
    warn_before_ms: int = 300_000
    max_extension_ms: int = 0
    """How much one run may be extended in all; 0: extensions are refused."""
    connected_is_active: bool = True
    """Whether a kernel with an open connection counts as in use."""

    @property
    def judges_idle(self) -> bool:
        return self.idle_timeout_ms > 0


@dataclass(frozen=True)
class KernelActivity:
    execution_state: str
    connections: int
    last_activity_ms: int | None


@dataclass(frozen=True)
class Activity:
    """What a Jupyter server says of its use (``api/status`` and ``api/kernels``)."""

    last_activity_ms: int | None
    kernels: tuple[KernelActivity, ...] = ()

    def latest_ms(self) -> int | None:
        times = [k.last_activity_ms for k in self.kernels if k.last_activity_ms is not None]
        if self.last_activity_ms is not None:
            times.append(self.last_activity_ms)
        return max(times) if times else None

    def in_use(self, policy: Policy) -> str | None:
        """Why the server is in use whatever its last activity; None if nothing holds it."""
        busy = sum(1 for k in self.kernels if k.execution_state in _WORKING)
        if busy:
            return f"{busy} kernel{'s' if busy > 1 else ''} busy"
        if policy.connected_is_active:
            connected = sum(1 for k in self.kernels if k.connections > 0)
            if connected:
                return f"{connected} kernel{'s' if connected > 1 else ''} connected"
        return None


_WORKING = frozenset({"busy", "starting", "restarting"})
"""Kernel states in which a kernel works (or is about to) on its own."""


class ActivityUnreadable(ValueError):
    """The server's answer does not have the shape Jupyter's API gives."""


def parse_activity(status: Any, kernels: Any, now_ms: int) -> Activity:
    """The activity in Jupyter's ``api/status`` and ``api/kernels`` answers.

    The answers come from the notebook's own server, hostile code's to shape: anything
    off the documented shape is refused, and a time ahead of ``now_ms`` counts as now
    (a server cannot buy itself idle time from the future).
    """
    if not isinstance(status, Mapping) or not isinstance(kernels, Sequence) or isinstance(
        kernels, str | bytes
    ):
        raise ActivityUnreadable("not the shape of api/status and api/kernels")
    parsed = []
    for kernel in kernels[:_MAX_KERNELS]:
        if not isinstance(kernel, Mapping):
            raise ActivityUnreadable("a kernel is not an object")
        state = kernel.get("execution_state")
        connections = kernel.get("connections", 0)
        if not isinstance(state, str) or not isinstance(connections, int):
            raise ActivityUnreadable("a kernel without its state or connections")
        parsed.append(
            KernelActivity(
                state[:32], max(0, connections), _instant(kernel.get("last_activity"), now_ms)
            )
        )
    return Activity(_instant(status.get("last_activity"), now_ms), tuple(parsed))


_MAX_KERNELS = 1000


def _instant(value: Any, now_ms: int) -> int | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 64:
        raise ActivityUnreadable("a time that is not an ISO 8601 string")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ActivityUnreadable(f"not an ISO 8601 time: {value!r}") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # Jupyter writes UTC
    return min(int(moment.timestamp() * 1000), now_ms)


@dataclass(frozen=True)
class PlannedStop:
    at_ms: int
    reason: StopReason
    why: str
    """The reason as a person reads it, after "because"."""


def planned_stops(
    instance: Instance, policy: Policy, activity: Activity | None
) -> list[PlannedStop]:
    """Every deadline of the instance's current run, earliest first (none unless RUNNING)."""
    if instance.status is not InstanceStatus.RUNNING or instance.running_since is None:
        return []
    stops = []
    if instance.stop_at is not None:
        stops.append(PlannedStop(instance.stop_at, StopReason.AUTO_STOP, "its auto-stop time came"))
    if policy.max_lifetime_ms:
        stops.append(
            PlannedStop(
                instance.running_since + policy.max_lifetime_ms + instance.extended_ms,
                StopReason.MAX_LIFETIME,
                f"a run may last at most {_span(policy.max_lifetime_ms + instance.extended_ms)}",
            )
        )
    idle = idle_stop(instance, policy, activity)
    if idle is not None:
        stops.append(idle)
    return sorted(stops, key=lambda s: s.at_ms)


def idle_stop(
    instance: Instance, policy: Policy, activity: Activity | None
) -> PlannedStop | None:
    if not policy.judges_idle or activity is None or instance.running_since is None:
        return None
    if activity.in_use(policy) is not None:
        return None
    since = max(activity.latest_ms() or instance.running_since, instance.running_since)
    allowance = policy.idle_timeout_ms + instance.extended_ms
    return PlannedStop(
        since + allowance,
        StopReason.IDLE,
        f"nothing used it for {_span(allowance)} (no kernel busy)",
    )


class Verdict(Enum):
    NONE = "none"
    WARN = "warn"
    STOP = "stop"


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    stop: PlannedStop | None = None


def judge(
    instance: Instance, policy: Policy, activity: Activity | None, now_ms: int
) -> Judgement:
    """What the policy asks of a RUNNING instance now: nothing, a warning of its next
    stop, or that stop."""
    stops = planned_stops(instance, policy, activity)
    if not stops:
        return Judgement(Verdict.NONE)
    first = stops[0]
    warned = instance.warned_for == first.at_ms
    if now_ms >= first.at_ms:
        if warned or not policy.warn_before_ms:
            return Judgement(Verdict.STOP, first)
        return Judgement(Verdict.WARN, first)
    if policy.warn_before_ms and not warned and now_ms >= first.at_ms - policy.warn_before_ms:
        return Judgement(Verdict.WARN, first)
    return Judgement(Verdict.NONE, first)


def extension(instance: Instance, policy: Policy, seconds: int) -> dict[str, Any]:
    """The changes that extend the instance's current run by ``seconds``."""
    if not policy.judges_idle and not planned_stops(instance, policy, None):
        raise errors.NothingToExtend(instance.status.value, "extend")
    if policy.max_extension_ms <= 0:
        raise errors.ExtensionRefused("The operator allows no extensions of a run.")
    left = max(0, policy.max_extension_ms - instance.extended_ms)
    if seconds * 1000 > left:
        raise errors.ExtensionRefused(
            f"This run can be extended by at most {left // 1000} more seconds "
            f"(the operator allows {policy.max_extension_ms // 1000} seconds per run)."
        )
    changes: dict[str, Any] = {"extended_ms": instance.extended_ms + seconds * 1000}
    if instance.stop_at is not None:
        changes["stop_at"] = instance.stop_at + seconds * 1000
    return changes


def _span(ms: int) -> str:
    seconds = ms // 1000
    if seconds % 3600 == 0 and seconds >= 3600:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0 and seconds >= 60:
        return f"{seconds // 60} min"
    return f"{seconds} s"
