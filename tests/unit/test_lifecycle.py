"""``domain/lifecycle.py`` against contract §4.2 and §4.3 as written in the spec."""

from __future__ import annotations

from collections import deque

import pytest

from demanager import errors
from demanager.api.errors import lookup
from demanager.domain.lifecycle import (
    ACTIONS,
    CALLER_TABLE,
    FAILED,
    HOLDS_RESOURCES,
    QUEUED,
    TRANSITIONS,
    IllegalTransition,
    InstanceStatus,
    Operation,
    decide,
    ensure_transition,
)
from tests.contract_table import CELLS, STATUSES

S = InstanceStatus

# Contract §4.2, transcribed: background moves of the engine.
BACKGROUND = [
    ("CREATE_QUEUING", "CREATING"), ("CREATING", "RUNNING"), ("CREATING", "CREATE_FAILED"),
    ("START_QUEUING", "READY_TO_START"), ("READY_TO_START", "STARTING"),
    ("STARTING", "RUNNING"), ("RESTARTING", "RUNNING"), ("STARTING", "START_FAILED"),
    ("RESTARTING", "START_FAILED"), ("RUNNING", "STOPPING"), ("RUNNING", "UNAVAILABLE"),
    ("UNAVAILABLE", "RUNNING"), ("STOPPING", "STOPPED"), ("RESIZING", "STOPPED"),
    ("RESIZING", "RESIZE_FAILED"),
]

TABLE_CELLS = [(s, op) for (s, op) in CELLS if s != "DELETED" and op != "PUT"]


def outcome_of(status: str, operation: str) -> str:
    """What the server's table says, in the spec's vocabulary."""
    cell = CALLER_TABLE[(S(status), Operation(operation))]
    if cell is None:
        return "allowed"
    if isinstance(cell, InstanceStatus):
        return cell.value
    return lookup(cell(status, operation))[1].removeprefix("ModelArts.")


@pytest.mark.parametrize(("status", "operation"), TABLE_CELLS)
def test_caller_table_matches_the_contract(status: str, operation: str) -> None:
    assert outcome_of(status, operation) == CELLS[(status, operation)]


@pytest.mark.parametrize(("status", "operation"), TABLE_CELLS)
def test_decide_follows_the_table(status: str, operation: str) -> None:
    cell = CELLS[(status, operation)]
    if cell.isdigit():
        with pytest.raises(errors.StateError) as caught:
            decide(S(status), Operation(operation), free_flavor=True)
        assert lookup(caught.value)[1] == f"ModelArts.{cell}"
        assert caught.value.status == status
    else:
        target = decide(S(status), Operation(operation), free_flavor=True)
        assert target == (None if cell == "allowed" else S(cell))


@pytest.mark.parametrize("status", [s for s in STATUSES if s != "DELETED"])
@pytest.mark.parametrize("operation", ["queue", "dequeue"])
def test_queue_and_dequeue_need_a_free_flavor(status: str, operation: str) -> None:
    with pytest.raises(errors.OperationNotAllowed):
        decide(S(status), Operation(operation), free_flavor=False)


def test_table_covers_every_status_and_operation() -> None:
    assert {s.value for s in InstanceStatus} == set(STATUSES)
    assert set(CALLER_TABLE) == {(S(s), Operation(op)) for s, op in TABLE_CELLS}
    assert {op.value for op in Operation} - {"delete"} == set(ACTIONS)


@pytest.mark.parametrize(("status", "operation"), TABLE_CELLS)
def test_every_caller_move_is_a_legal_transition(status: str, operation: str) -> None:
    cell = CELLS[(status, operation)]
    if cell == "allowed":  # an allowed delete leaves a tombstone
        assert operation == "delete"
        ensure_transition(S(status), S.DELETED)
    elif not cell.isdigit():
        ensure_transition(S(status), S(cell))


@pytest.mark.parametrize(("current", "target"), BACKGROUND)
def test_every_background_move_is_legal(current: str, target: str) -> None:
    ensure_transition(S(current), S(target))


def test_start_may_queue_where_start_is_accepted_from_rest() -> None:
    # footnote 4: start of a sold-out free flavor answers START_QUEUING instead
    for status in (S.STOPPED, S.START_FAILED):
        ensure_transition(status, S.START_QUEUING)


def test_every_transition_target_is_justified() -> None:
    """Each edge of TRANSITIONS is a §4.2 move, a §4.3 move, a tombstone or a failure."""
    caller = {(s, CELLS[(s, op)]) for s, op in TABLE_CELLS if not CELLS[(s, op)].isdigit()}
    deletes = {(s, "DELETED") for s, target in caller if target == "allowed"}
    moves = {(s, t) for s, t in caller if t != "allowed"} | set(BACKGROUND) | deletes
    extra = {("START_FAILED", "START_QUEUING"), ("STOPPED", "START_QUEUING"),  # footnote 4
             ("UNAVAILABLE", "START_FAILED")}  # a relaunch after a fault can fail
    for current, targets in TRANSITIONS.items():
        for target in targets:
            assert (current.value, target.value) in moves | extra, (current, target)


def test_every_status_is_reachable_from_a_create() -> None:
    seen = {S.CREATING, S.CREATE_QUEUING}
    todo = deque(seen)
    while todo:
        for target in TRANSITIONS[todo.popleft()]:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    # RESIZING is reserved: no endpoint changes the flavor (§4.1)
    assert set(InstanceStatus) - seen == {S.RESIZING, S.RESIZE_FAILED}


def test_deleted_is_terminal_and_nothing_else_is() -> None:
    assert TRANSITIONS[S.DELETED] == frozenset()
    for status in InstanceStatus:
        if status is not S.DELETED:
            assert TRANSITIONS[status], status


@pytest.mark.parametrize(("current", "target"), [
    (S.DELETED, S.RUNNING), (S.STOPPED, S.RUNNING), (S.RUNNING, S.DELETED),
    (S.CREATING, S.DELETED), (S.STOPPED, S.STOPPED), (S.READY_TO_START, S.START_QUEUING),
])
def test_illegal_transitions_raise(current: InstanceStatus, target: InstanceStatus) -> None:
    with pytest.raises(IllegalTransition) as caught:
        ensure_transition(current, target)
    assert current.value in str(caught.value) and target.value in str(caught.value)


def test_status_groups() -> None:
    assert {s.value for s in FAILED} == {"CREATE_FAILED", "START_FAILED", "RESIZE_FAILED",
                                         "UNAVAILABLE"}
    assert {s.value for s in QUEUED} == {"CREATE_QUEUING", "START_QUEUING"}
    assert not HOLDS_RESOURCES & (QUEUED | {S.STOPPED, S.DELETED, S.CREATE_FAILED})
