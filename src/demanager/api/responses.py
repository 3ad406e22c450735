"""JSON responses in the contract's exact media type, and how routes document their errors."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.responses import JSONResponse, Response

from demanager.schemas.instances import ErrorBody

#: What any API route may answer besides 200 (contract §1.9): the auth, routing, rate
#: limit and fault statuses, all in the error shape.
COMMON_ERROR_STATUSES = (400, 401, 403, 404, 405, 429, 500)


class WireJSON(JSONResponse):
    media_type = "application/json; charset=UTF-8"


class FastWireJSON(Response):
    """A body of plain dicts, lists, strings, integers, booleans and ``None`` (as
    ``engine/wire.py`` builds instances), encoded by orjson: the read path's encoder,
    several times quicker than the standard library's. Same bytes as ``WireJSON``'s
    for such bodies: compact, UTF-8, non-ASCII unescaped."""

    media_type = "application/json; charset=UTF-8"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_responses(*extra: int) -> dict[int | str, dict[str, object]]:
    """The ``responses=`` of a route: every status it may answer in the error shape
    (``extra``: 413 for routes that read a body)."""
    return {code: {"model": ErrorBody} for code in sorted({*COMMON_ERROR_STATUSES, *extra})}
