"""The event log (an extension, docs/events.md): pages of a project's or an instance's
events, and the same as live server-sent event streams."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.responses import StreamingResponse

from demanager.api.dependencies import CallerDep, RuntimeDep, first_query_values
from demanager.api.responses import WireJSON, error_responses

router = APIRouter(prefix="/v1/{project_id}/demanager", tags=["events"])

_ERRORS = error_responses()


def _query(name: str, description: str, default: int | None = None,
           minimum: int = 0, maximum: int | None = None) -> dict[str, object]:
    schema: dict[str, object] = {"type": "integer", "minimum": minimum}
    if maximum is not None:
        schema["maximum"] = maximum
    if default is not None:
        schema["default"] = default
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema}


_PAGE = {"parameters": [
    _query("limit", "Page size, 1 to 1000.", 100, 1, 1000),
    _query("offset", "Events of the selection to skip.", 0),
    _query("after", "Only events with a greater id.", 0),
]}
_STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

LastEventId = Annotated[str | None, Header(alias="Last-Event-ID", include_in_schema=False)]


@router.get("/events", responses=_ERRORS, openapi_extra=_PAGE,
            summary="The project's events, oldest first (extension)")
async def project_events(request: Request, runtime: RuntimeDep, caller: CallerDep) -> WireJSON:
    return WireJSON(
        await runtime.events.page(principal=caller, params=first_query_values(request))
    )


# The streams are left out of /openapi.json: OpenAPI cannot describe an endless
# text/event-stream, and a schema fuzzer would wait on one forever. docs/events.md
# documents them.
@router.get("/events/stream", include_in_schema=False)
async def project_event_stream(
    request: Request, runtime: RuntimeDep, caller: CallerDep, last_event_id: LastEventId = None
) -> StreamingResponse:
    stream = await runtime.events.open_stream(
        principal=caller, params=first_query_values(request), last_event_id=last_event_id
    )
    return StreamingResponse(stream, media_type="text/event-stream", headers=_STREAM_HEADERS)


@router.get("/instances/{instance_id}/events", responses=_ERRORS, openapi_extra=_PAGE,
            summary="An instance's events, oldest first (extension)")
async def instance_events(
    instance_id: str, request: Request, runtime: RuntimeDep, caller: CallerDep
) -> WireJSON:
    return WireJSON(await runtime.events.page(
        principal=caller, params=first_query_values(request), instance_id=instance_id
    ))


@router.get("/instances/{instance_id}/events/stream", include_in_schema=False)
async def instance_event_stream(
    instance_id: str, request: Request, runtime: RuntimeDep, caller: CallerDep,
    last_event_id: LastEventId = None,
) -> StreamingResponse:
    stream = await runtime.events.open_stream(
        principal=caller, params=first_query_values(request), last_event_id=last_event_id,
        instance_id=instance_id,
    )
    return StreamingResponse(stream, media_type="text/event-stream", headers=_STREAM_HEADERS)
