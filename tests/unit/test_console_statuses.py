"""The console's copy of the lifecycle (``web/static/statuses.js``) matches the domain's.

The console shows a button only where the API would accept it; that table is
JavaScript, so this test reads it and compares it with ``CALLER_TABLE``.
"""

from __future__ import annotations

import re

from demanager.domain.lifecycle import CALLER_TABLE, InstanceStatus, Operation
from demanager.web.console import STATIC_DIR

SOURCE = (STATIC_DIR / "statuses.js").read_text(encoding="utf-8")


def _block(name: str) -> str:
    match = re.search(rf"const {name} = \{{(.*?)\n\}};", SOURCE, re.S)
    assert match, f"{name} not found in statuses.js"
    return match.group(1)


def _console_actions() -> dict[str, set[str]]:
    found = re.findall(r"(\w+): new Set\(\[(.*?)\]\)", _block("ACTIONS"), re.S)
    return {action: set(re.findall(r'"([A-Z_]+)"', body)) for action, body in found}


def test_buttons_follow_the_caller_table() -> None:
    actions = _console_actions()
    assert set(actions) == {"start", "stop", "restart", "dequeue", "delete"}
    for action, shown in actions.items():
        operation = Operation(action)
        accepted = {
            status.value for status in InstanceStatus
            if (status, operation) in CALLER_TABLE  # DELETED has no row: it is "not found"
            and not isinstance(CALLER_TABLE[(status, operation)], type)
        }
        assert shown == accepted, action


def test_every_status_has_a_label() -> None:
    labelled = set(re.findall(r"^\s+([A-Z_]+): \{ label:", _block("STATUSES"), re.M))
    assert labelled == {status.value for status in InstanceStatus}
