"""Request bodies: UTF-8 JSON whatever the Content-Type says (contract §1.2).

Parsing is part of validation, not of HTTP: it runs after the instance a request
names was found, so that an unknown instance answers 6309 before a bad body 6400.
"""

from __future__ import annotations

import json
from typing import Any

from demanager import errors


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(raw: bytes) -> Any:
    try:
        parsed = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
        # A "\ud800" escape decodes to a lone surrogate: no valid UTF-8 text holds one,
        # and neither the store nor a response could carry it.
        json.dumps(parsed, ensure_ascii=False).encode("utf-8")
    except (UnicodeError, ValueError, RecursionError) as exc:
        raise errors.InvalidPayload("The request payload is not valid UTF-8 JSON.") from exc
    return parsed
