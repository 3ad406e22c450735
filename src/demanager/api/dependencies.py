"""FastAPI dependencies as ``Annotated`` aliases, in one place."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from demanager.api.auth import HEADER
from demanager.engine.runtime import Runtime
from demanager.identity.principal import Principal


async def get_runtime(request: Request) -> Runtime:
    # async: FastAPI runs a plain function dependency in a worker thread, a thread hop
    # on every request for an attribute read.
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


async def read_body(request: Request) -> bytes:
    """The raw body; parsed later, as part of validation (``domain/payload.py``).

    Its size is already bounded: ``api.body_limit`` answers 413 past ``max_body_bytes``."""
    return await request.body()


def first_query_values(request: Request) -> dict[str, str]:
    """Each query parameter's first value (contract §6.1: a repeated one counts once)."""
    values: dict[str, str] = {}
    for key, value in request.query_params.multi_items():
        values.setdefault(key, value)
    return values
