"""Contract §4.3, copied from the spec as text, for tests to check the server against.

Kept apart from ``demanager.domain.lifecycle`` on purpose: the server's table is
checked against this transcription, not against itself.
"""

from __future__ import annotations

TABLE_43 = """
| Current status | start | stop | restart | queue | dequeue | delete | PUT |
| CREATE_QUEUING | 6357 | 6357 | 6327 | 6357 | STOPPED | allowed | allowed |
| CREATING | 6357 | 6357 | 6327 | 6357 | 6357 | 6357 | allowed |
| CREATE_FAILED | 6357 | 6327 | 6327 | 6357 | 6357 | allowed | allowed |
| START_QUEUING | 6357 | 6357 | 6327 | 6357 | STOPPED | allowed | allowed |
| READY_TO_START | STARTING | 6357 | 6327 | 6357 | STOPPED | allowed | allowed |
| STARTING | 6306 | 6306 | 6306 | 6306 | 6357 | 6306 | allowed |
| RESTARTING | 6357 | 6357 | 6357 | 6357 | 6357 | 6304 | allowed |
| START_FAILED | STARTING | 6327 | 6327 | START_QUEUING | 6357 | allowed | allowed |
| RUNNING | 6305 | STOPPING | RESTARTING | 6305 | 6357 | 6304 | allowed |
| STOPPING | 6308 | 6308 | 6308 | 6308 | 6357 | 6308 | allowed |
| STOPPED | STARTING | 6307 | 6327 | START_QUEUING | 6357 | allowed | allowed |
| UNAVAILABLE | 6333 | STOPPING | 6333 | 6357 | 6357 | allowed | allowed |
| RESIZING | 6357 | 6357 | 6327 | 6357 | 6357 | 6357 | allowed |
| RESIZE_FAILED | STARTING | 6327 | 6327 | 6357 | 6357 | allowed | allowed |
| DELETED | 6309 | 6309 | 6309 | 6309 | 6309 | 6309 | 6309 |
"""

OPERATIONS = ("start", "stop", "restart", "queue", "dequeue", "delete", "PUT")
ACTIONS = ("start", "stop", "restart", "queue", "dequeue")


def _parse() -> dict[tuple[str, str], str]:
    lines = [line.strip(" |") for line in TABLE_43.strip().splitlines()]
    header = [cell.strip() for cell in lines[0].split("|")][1:]
    assert tuple(header) == OPERATIONS
    table = {}
    for line in lines[1:]:
        status, *cells = (cell.strip() for cell in line.split("|"))
        for operation, cell in zip(OPERATIONS, cells, strict=True):
            table[(status, operation)] = cell
    return table


CELLS: dict[tuple[str, str], str] = _parse()
"""(status, operation) -> a new status, a four-digit error code, or ``allowed``."""

STATUSES: tuple[str, ...] = tuple(dict.fromkeys(status for status, _ in CELLS))


def expected(status: str, operation: str, *, free_flavor: bool = True) -> str:
    """The cell, with footnote 1: queue/dequeue on a non-free flavor answer 6357."""
    if status == "DELETED":
        return "6309"
    if operation in ("queue", "dequeue") and not free_flavor:
        return "6357"
    return CELLS[(status, operation)]
