"""FastAPI dependencies as ``Annotated`` aliases, in one place."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from demanager import errors
from demanager.api.auth import HEADER
from demanager.engine.runtime import Runtime
from demanager.identity.principal import Principal


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_caller(
    project_id: str,
    runtime: RuntimeDep,
    token: Annotated[str | None, Header(alias=HEADER, include_in_schema=False)] = None,
) -> Principal:
    return await runtime.identity.authenticate(token, project_id)


CallerDep = Annotated[Principal, Depends(get_caller)]


async def read_body(request: Request, runtime: Runtime) -> bytes:
    """The raw body, refused when larger than the configured limit; parsed later, as part
    of validation (``domain/payload.py``)."""
    body = await request.body()
    if len(body) > runtime.settings.max_body_bytes:
        raise errors.InvalidPayload("The request payload is too large.")
    return body


def first_query_values(request: Request) -> dict[str, str]:
    """Each query parameter's first value (contract §6.1: a repeated one counts once)."""
    values: dict[str, str] = {}
    for key, value in request.query_params.multi_items():
        values.setdefault(key, value)
    return values
