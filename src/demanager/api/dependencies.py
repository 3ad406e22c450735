"""FastAPI dependencies as ``Annotated`` aliases, in one place."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import Depends, Header, Request

from demanager import errors
from demanager.api.auth import HEADER, Caller, authenticate
from demanager.engine.runtime import Runtime


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_caller(
    project_id: str,
    runtime: RuntimeDep,
    token: Annotated[str | None, Header(alias=HEADER, include_in_schema=False)] = None,
) -> Caller:
    return await authenticate(runtime, token, project_id)


CallerDep = Annotated[Caller, Depends(get_caller)]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


async def read_json(request: Request) -> Any:
    """The body as parsed JSON, whatever the Content-Type says (contract §1.2).

    Its size is already bounded: ``api.body_limit`` answers 413 past ``max_body_bytes``."""
    body = await request.body()
    try:
        parsed = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
        # A "\ud800" escape decodes to a lone surrogate: no valid UTF-8 text holds one,
        # and neither the store nor a response could carry it.
        json.dumps(parsed, ensure_ascii=False).encode("utf-8")
    except (UnicodeError, ValueError, RecursionError) as exc:
        raise errors.InvalidPayload("The request payload is not valid UTF-8 JSON.") from exc
    return parsed


def first_query_values(request: Request) -> dict[str, str]:
    """Each query parameter's first value (contract §6.1: a repeated one counts once)."""
    values: dict[str, str] = {}
    for key, value in request.query_params.multi_items():
        values.setdefault(key, value)
    return values
