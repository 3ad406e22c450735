"""The six routes of the contract, plus the optional token route (§2.7)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from demanager.api.dependencies import CallerDep, RuntimeDep, first_query_values, read_body
from demanager.api.responses import FastWireJSON, WireJSON, error_responses
from demanager.domain.lifecycle import InstanceStatus
from demanager.schemas import instances as w

router = APIRouter(prefix="/v1/{project_id}/demanager/instances", tags=["instances"])

_ERRORS = error_responses(413)


def _body(model: type[w.Wire]) -> dict[str, object]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}},
        }
    }


@router.post("", response_model=w.Instance, responses=_ERRORS,
             openapi_extra=_body(w.InstanceCreate),
             summary="Create an instance (asynchronous: answers CREATING)")
async def create_instance(
    request: Request, runtime: RuntimeDep, caller: CallerDep
) -> FastWireJSON:
    raw = await read_body(request)
    return FastWireJSON(await runtime.views.create(principal=caller, raw=raw))


def _query(name: str, description: str, kind: str = "string", *, required: bool = False,
           enum: list[str] | None = None, default: object = None,
           minimum: int | None = None) -> dict[str, object]:
    schema: dict[str, object] = {"type": kind}
    if enum is not None:
        schema["enum"] = enum
    if minimum is not None:
        schema["minimum"] = minimum
    if default is not None:
        schema["default"] = default
    return {"name": name, "in": "query", "required": required, "description": description,
            "schema": schema}


#: The list parameters (contract §6.1); the route reads them by hand, so they are listed here.
_LIST_PARAMETERS = {
    "parameters": [
        _query("de_type", "Only 'Notebook'.", required=True, enum=["Notebook"]),
        _query("provision_type", "Only 'Docker'.", enum=["Docker"]),
        _query("status", "One status; without it, every status except DELETED.",
               enum=[s.value for s in InstanceStatus]),
        _query("sortby", "Sort key.", enum=["name", "creation_timestamp"], default="name"),
        _query("order", "Sort order.", enum=["asc", "desc"], default="asc"),
        _query("offset", "Index of the first returned instance.", "integer", default=0,
               minimum=0),
        _query("limit", "Page size; 0 returns everything from offset on.", "integer", default=0,
               minimum=0),
        _query("workspace_id", "Workspace of the instances.", default="0"),
        _query("show_self", "true: only the caller's instances (case-insensitive).",
               default="true"),
        _query("ai_project", "Only instances of this AI project."),
        _query("pool_id", "Only instances in this dedicated pool."),
    ]
}


@router.get("", response_model=w.InstanceList, responses=_ERRORS, summary="List instances",
            openapi_extra=_LIST_PARAMETERS)
async def list_instances(
    request: Request, runtime: RuntimeDep, caller: CallerDep
) -> FastWireJSON:
    return FastWireJSON(
        await runtime.views.list(principal=caller, params=first_query_values(request))
    )


@router.get("/{instance_id}", response_model=w.Instance, responses=_ERRORS,
            summary="Get an instance")
async def get_instance(
    instance_id: str, runtime: RuntimeDep, caller: CallerDep
) -> FastWireJSON:
    return FastWireJSON(await runtime.views.get(principal=caller, instance_id=instance_id))


@router.put("/{instance_id}", response_model=w.Instance, responses=_ERRORS,
            openapi_extra=_body(w.InstanceUpdate), summary="Change description and auto-stop")
async def update_instance(
    instance_id: str, request: Request, runtime: RuntimeDep, caller: CallerDep
) -> FastWireJSON:
    raw = await read_body(request)
    return FastWireJSON(
        await runtime.views.update(principal=caller, instance_id=instance_id, raw=raw)
    )


@router.delete("/{instance_id}", response_model=w.DeleteResponse, responses=_ERRORS,
               summary="Delete an instance and its EVS volume")
async def delete_instance(instance_id: str, runtime: RuntimeDep, caller: CallerDep) -> WireJSON:
    return WireJSON(await runtime.views.delete(principal=caller, instance_id=instance_id))


@router.post("/{instance_id}/action", response_model=w.ActionResponse, responses=_ERRORS,
             openapi_extra=_body(w.ActionRequest), summary="start, stop, restart, queue, dequeue")
async def act_on_instance(
    instance_id: str, request: Request, runtime: RuntimeDep, caller: CallerDep
) -> WireJSON:
    raw = await read_body(request)
    return WireJSON(await runtime.views.act(principal=caller, instance_id=instance_id, raw=raw))


@router.get("/{instance_id}/stops", response_model=w.RunStops, responses=_ERRORS,
            summary="When the current run will stop, and why (extension)")
async def run_stops(instance_id: str, runtime: RuntimeDep, caller: CallerDep) -> WireJSON:
    return WireJSON(await runtime.views.stops(principal=caller, instance_id=instance_id))


@router.post("/{instance_id}/extend", response_model=w.RunStops, responses=_ERRORS,
             openapi_extra=_body(w.ExtendRequest),
             summary="Postpone the current run's stops, within the operator's limit (extension)")
async def extend_run(
    instance_id: str, request: Request, runtime: RuntimeDep, caller: CallerDep
) -> WireJSON:
    raw = await read_body(request)
    return WireJSON(await runtime.views.extend(principal=caller, instance_id=instance_id, raw=raw))


@router.get("/{instance_id}/token", response_model=w.TokenResponse, responses=_ERRORS,
             summary="A credential that opens the running notebook through the proxy "
                     "(historical route)")
async def instance_token(instance_id: str, runtime: RuntimeDep, caller: CallerDep) -> WireJSON:
    return WireJSON(await runtime.views.token(principal=caller, instance_id=instance_id))


@router.post("/{instance_id}/signed-url", response_model=w.SignedUrlResponse,
             responses=_ERRORS, summary="A short-lived link that opens the notebook (extension)")
async def signed_url(instance_id: str, runtime: RuntimeDep, caller: CallerDep) -> WireJSON:
    return WireJSON(await runtime.views.signed_url(principal=caller, instance_id=instance_id))
