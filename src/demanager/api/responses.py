"""JSON responses in the contract's exact media type."""

from __future__ import annotations

from fastapi.responses import JSONResponse


class WireJSON(JSONResponse):
    media_type = "application/json; charset=UTF-8"
