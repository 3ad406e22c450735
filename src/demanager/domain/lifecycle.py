"""Statuses and the moves between them: the only place that says which may follow which.

Two tables live here, both as data:

* ``TRANSITIONS``: every legal status write: the background moves of
  contract §4.2 and the caller-driven moves of §4.3;
* ``CALLER_TABLE``: for each (status, operation) the status the caller's request
  leads to, or the error class that refuses it (contract §4.3).

``ensure_transition`` guards every status write in the store.
"""

from __future__ import annotations

from enum import StrEnum

from demanager import errors


class InstanceStatus(StrEnum):
    CREATE_QUEUING = "CREATE_QUEUING"
    CREATING = "CREATING"
    CREATE_FAILED = "CREATE_FAILED"
    START_QUEUING = "START_QUEUING"
    READY_TO_START = "READY_TO_START"
    STARTING = "STARTING"
    RESTARTING = "RESTARTING"
    START_FAILED = "START_FAILED"
    RUNNING = "RUNNING"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"
    UNAVAILABLE = "UNAVAILABLE"
    DELETED = "DELETED"
    RESIZING = "RESIZING"
    RESIZE_FAILED = "RESIZE_FAILED"


class Operation(StrEnum):
    START = "start"
    STOP = "stop"
    RESTART = "restart"
    QUEUE = "queue"
    DEQUEUE = "dequeue"
    DELETE = "delete"


#: The five values the action endpoint accepts.
ACTIONS: frozenset[str] = frozenset(
    {Operation.START, Operation.STOP, Operation.RESTART, Operation.QUEUE, Operation.DEQUEUE}
)

S = InstanceStatus

#: Statuses in which a workload exists or is being brought up: they hold capacity.
HOLDS_RESOURCES: frozenset[InstanceStatus] = frozenset(
    {S.CREATING, S.READY_TO_START, S.STARTING, S.RESTARTING, S.RUNNING, S.UNAVAILABLE, S.STOPPING}
)

#: Statuses in which the engine has work to do, whatever the backend says.
TRANSITIONAL: frozenset[InstanceStatus] = frozenset(
    {
        S.CREATING,
        S.READY_TO_START,
        S.STARTING,
        S.RESTARTING,
        S.STOPPING,
        S.CREATE_QUEUING,
        S.START_QUEUING,
    }
)

#: Statuses of instances waiting for a slot of a free flavor; they carry ``queuing_info``.
QUEUED: frozenset[InstanceStatus] = frozenset({S.CREATE_QUEUING, S.START_QUEUING})

#: Statuses whose instance carries ``error_code`` and ``failed_reasons``.
FAILED: frozenset[InstanceStatus] = frozenset(
    {S.CREATE_FAILED, S.START_FAILED, S.RESIZE_FAILED, S.UNAVAILABLE}
)

TRANSITIONS: dict[InstanceStatus, frozenset[InstanceStatus]] = {
    S.CREATE_QUEUING: frozenset({S.CREATING, S.STOPPED, S.DELETED}),
    S.CREATING: frozenset({S.RUNNING, S.CREATE_FAILED}),
    S.CREATE_FAILED: frozenset({S.DELETED}),
    S.START_QUEUING: frozenset({S.READY_TO_START, S.STOPPED, S.DELETED}),
    S.READY_TO_START: frozenset({S.STARTING, S.STOPPED, S.DELETED}),
    S.STARTING: frozenset({S.RUNNING, S.START_FAILED}),
    S.RESTARTING: frozenset({S.RUNNING, S.START_FAILED}),
    S.START_FAILED: frozenset({S.STARTING, S.START_QUEUING, S.DELETED}),
    S.RUNNING: frozenset({S.STOPPING, S.RESTARTING, S.UNAVAILABLE}),
    S.STOPPING: frozenset({S.STOPPED}),
    S.STOPPED: frozenset({S.STARTING, S.START_QUEUING, S.DELETED}),
    S.UNAVAILABLE: frozenset({S.RUNNING, S.STOPPING, S.START_FAILED, S.DELETED}),
    S.RESIZING: frozenset({S.STOPPED, S.RESIZE_FAILED}),
    S.RESIZE_FAILED: frozenset({S.STARTING, S.DELETED}),
    S.DELETED: frozenset(),
}


class IllegalTransition(errors.DemanagerError):
    """A status write the table does not allow: a bug, never a caller's fault."""

    def __init__(self, current: InstanceStatus, target: InstanceStatus) -> None:
        super().__init__(f"illegal status transition {current} -> {target}")
        self.current = current
        self.target = target


def ensure_transition(current: InstanceStatus, target: InstanceStatus) -> None:
    if target not in TRANSITIONS[current]:
        raise IllegalTransition(current, target)


_E = errors
O = Operation  # noqa: E741

Outcome = InstanceStatus | type[errors.StateError] | None
"""A caller's operation leads to a status, is refused with an error, or (``None``,
delete and PUT only) is allowed without a status of its own."""

# Contract §4.3, row by row. Cells: the status the operation leads to, the error
# class that refuses it, or ALLOWED (delete only).
NOT_ALLOWED = _E.OperationNotAllowed  # 6357
NOT_RUNNING = _E.NotRunning  # 6327
IS_STARTING = _E.InstanceStarting  # 6306
IS_STOPPING = _E.InstanceStopping  # 6308
IS_RUNNING = _E.AlreadyRunning  # 6305
ALLOWED = None

# fmt: off
_ROWS: dict[InstanceStatus, tuple[Outcome, Outcome, Outcome, Outcome, Outcome, Outcome]] = {
    #                   start             stop               restart           queue            dequeue      delete
    S.CREATE_QUEUING:  (NOT_ALLOWED,      NOT_ALLOWED,       NOT_RUNNING,      NOT_ALLOWED,     S.STOPPED,   ALLOWED),
    S.CREATING:        (NOT_ALLOWED,      NOT_ALLOWED,       NOT_RUNNING,      NOT_ALLOWED,     NOT_ALLOWED, NOT_ALLOWED),
    S.CREATE_FAILED:   (NOT_ALLOWED,      NOT_RUNNING,       NOT_RUNNING,      NOT_ALLOWED,     NOT_ALLOWED, ALLOWED),
    S.START_QUEUING:   (NOT_ALLOWED,      NOT_ALLOWED,       NOT_RUNNING,      NOT_ALLOWED,     S.STOPPED,   ALLOWED),
    S.READY_TO_START:  (S.STARTING,       NOT_ALLOWED,       NOT_RUNNING,      NOT_ALLOWED,     S.STOPPED,   ALLOWED),
    S.STARTING:        (IS_STARTING,      IS_STARTING,       IS_STARTING,      IS_STARTING,     NOT_ALLOWED, IS_STARTING),
    S.RESTARTING:      (NOT_ALLOWED,      NOT_ALLOWED,       NOT_ALLOWED,      NOT_ALLOWED,     NOT_ALLOWED, _E.StopBeforeDelete),
    S.START_FAILED:    (S.STARTING,       NOT_RUNNING,       NOT_RUNNING,      S.START_QUEUING, NOT_ALLOWED, ALLOWED),
    S.RUNNING:         (IS_RUNNING,       S.STOPPING,        S.RESTARTING,     IS_RUNNING,      NOT_ALLOWED, _E.StopBeforeDelete),
    S.STOPPING:        (IS_STOPPING,      IS_STOPPING,       IS_STOPPING,      IS_STOPPING,     NOT_ALLOWED, IS_STOPPING),
    S.STOPPED:         (S.STARTING,       _E.AlreadyStopped, NOT_RUNNING,      S.START_QUEUING, NOT_ALLOWED, ALLOWED),
    S.UNAVAILABLE:     (_E.BeingRestored, S.STOPPING,        _E.BeingRestored, NOT_ALLOWED,     NOT_ALLOWED, ALLOWED),
    S.RESIZING:        (NOT_ALLOWED,      NOT_ALLOWED,       NOT_RUNNING,      NOT_ALLOWED,     NOT_ALLOWED, NOT_ALLOWED),
    S.RESIZE_FAILED:   (S.STARTING,       NOT_RUNNING,       NOT_RUNNING,      NOT_ALLOWED,     NOT_ALLOWED, ALLOWED),
}
# fmt: on

_COLUMNS = (O.START, O.STOP, O.RESTART, O.QUEUE, O.DEQUEUE, O.DELETE)

CALLER_TABLE: dict[tuple[InstanceStatus, Operation], Outcome] = {
    (status, op): cell
    for status, row in _ROWS.items()
    for op, cell in zip(_COLUMNS, row, strict=True)
}

#: Operations that only free flavors accept; every other flavor answers 6357.
FREE_ONLY: frozenset[Operation] = frozenset({O.QUEUE, O.DEQUEUE})


def decide(
    status: InstanceStatus, operation: Operation, *, free_flavor: bool
) -> InstanceStatus | None:
    """The status ``operation`` leads to from ``status``; raises the refusing StateError.

    Returns ``None`` for an allowed delete (the instance becomes a tombstone).
    Callers answer ``DELETED`` instances as not found before asking.
    """
    if operation in FREE_ONLY and not free_flavor:
        raise errors.OperationNotAllowed(status, operation)
    outcome = CALLER_TABLE[(status, operation)]
    if isinstance(outcome, type):
        raise outcome(status, operation)
    return outcome
