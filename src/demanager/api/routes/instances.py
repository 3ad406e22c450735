"""The six routes of the contract, plus the optional token route (§2.7)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fastapi import APIRouter, Request

from demanager import errors
from demanager.api.dependencies import CallerDep, RuntimeDep, first_query_values, read_json
from demanager.api.presenters import FlavorView, Presenter
from demanager.api.responses import WireJSON
from demanager.domain.instance import Instance
from demanager.domain.lifecycle import QUEUED, InstanceStatus
from demanager.engine.runtime import Runtime
from demanager.identity.principal import Principal
from demanager.schemas import instances as w

router = APIRouter(prefix="/v1/{project_id}/demanager/instances", tags=["instances"])

_ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": w.ErrorBody} for code in (400, 401, 403, 404, 405, 429, 500)
}


def _body(model: type[w.Wire]) -> dict[str, object]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}},
        }
    }


async def _flavor_view(
    runtime: Runtime,
    caller: Principal,
    instances: Sequence[Instance],
    counts: Mapping[str, int] | None,
) -> FlavorView:
    names = {i.flavor for i in instances}
    sold_out = frozenset([n for n in names if await runtime.service.sold_out(n)])
    if counts is None:
        counts = await runtime.instances.count_by_flavor(caller.project_id, caller.user_id)
    queued = {i.flavor for i in instances if i.status in QUEUED} | {
        n for n in sold_out if (f := runtime.catalog.flavors.get(n)) is not None and f.free
    }
    queues = {n: await runtime.instances.queued(n) for n in queued}
    return FlavorView(sold_out=sold_out, counts=counts, user_name=caller.user_name,
                      queues=queues)


async def present(
    runtime: Runtime,
    caller: Principal,
    instances: list[Instance],
    counts: Mapping[str, int] | None = None,
) -> list[dict[str, object]]:
    """Wire dicts of ``instances``; ``counts`` (the caller's instances per flavor) is
    queried when not already at hand."""
    view = await _flavor_view(runtime, caller, instances, counts)
    presenter = Presenter(runtime.catalog, runtime.settings.target_domain)
    now = runtime.clock.now_ms()
    return [
        presenter.instance(i, now_ms=now, flavors=view).model_dump(mode="json", exclude_unset=True)
        for i in instances
    ]


@router.post("", response_model=w.Instance, responses=_ERRORS,
             openapi_extra=_body(w.InstanceCreate),
             summary="Create an instance (asynchronous: answers CREATING)")
async def create_instance(request: Request, runtime: RuntimeDep, caller: CallerDep) -> WireJSON:
    body = await read_json(request, runtime)
    instance = await runtime.service.create(principal=caller, body=body)
    return WireJSON((await present(runtime, caller, [instance]))[0])


def _query(name: str, description: str, kind: str = "string", *, required: bool = False,
           enum: list[str] | None = None, default: object = None) -> dict[str, object]:
    schema: dict[str, object] = {"type": kind}
    if enum is not None:
        schema["enum"] = enum
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
        _query("offset", "Index of the first returned instance.", "integer", default=0),
        _query("limit", "Page size; 0 returns everything from offset on.", "integer", default=0),
        _query("workspace_id", "Workspace of the instances.", default="0"),
        _query("show_self", "true: only the caller's instances (case-insensitive).",
               default="true"),
        _query("ai_project", "Only instances of this AI project."),
        _query("pool_id", "Only instances in this dedicated pool."),
    ]
}


@router.get("", response_model=w.InstanceList, responses=_ERRORS, summary="List instances",
            openapi_extra=_LIST_PARAMETERS)
async def list_instances(request: Request, runtime: RuntimeDep, caller: CallerDep) -> WireJSON:
    total, page, counts = await runtime.service.list(
        principal=caller, params=first_query_values(request)
    )
    instances = await present(runtime, caller, page, counts)
    return WireJSON({"total_count": total, "instances": instances})


@router.get("/{instance_id}", response_model=w.Instance, responses=_ERRORS,
            summary="Get an instance")
async def get_instance(instance_id: str, runtime: RuntimeDep, caller: CallerDep) -> WireJSON:
    instance, counts = await runtime.service.view(principal=caller, instance_id=instance_id)
    return WireJSON((await present(runtime, caller, [instance], counts))[0])


@router.put("/{instance_id}", response_model=w.Instance, responses=_ERRORS,
            openapi_extra=_body(w.InstanceUpdate), summary="Change description and auto-stop")
async def update_instance(
    instance_id: str, request: Request, runtime: RuntimeDep, caller: CallerDep
) -> WireJSON:
    await runtime.service.get(principal=caller, instance_id=instance_id)
    body = await read_json(request, runtime)
    instance = await runtime.service.update(principal=caller, instance_id=instance_id, body=body)
    return WireJSON((await present(runtime, caller, [instance]))[0])


@router.delete("/{instance_id}", response_model=w.DeleteResponse, responses=_ERRORS,
               summary="Delete an instance and its EVS volume")
async def delete_instance(instance_id: str, runtime: RuntimeDep, caller: CallerDep) -> WireJSON:
    await runtime.service.delete(principal=caller, instance_id=instance_id)
    return WireJSON({"instance_id": instance_id})


@router.post("/{instance_id}/action", response_model=w.ActionResponse, responses=_ERRORS,
             openapi_extra=_body(w.ActionRequest), summary="start, stop, restart, queue, dequeue")
async def act_on_instance(
    instance_id: str, request: Request, runtime: RuntimeDep, caller: CallerDep
) -> WireJSON:
    await runtime.service.get(principal=caller, instance_id=instance_id)
    body = await read_json(request, runtime)
    current, previous = await runtime.service.act(
        principal=caller, instance_id=instance_id, body=body
    )
    return WireJSON({"current_status": current.value, "previous_state": previous.value})


@router.get("/{instance_id}/token", response_model=w.TokenResponse, responses=_ERRORS,
             summary="A credential that opens the running notebook through the proxy "
                     "(historical route)")
async def instance_token(instance_id: str, runtime: RuntimeDep, caller: CallerDep) -> WireJSON:
    instance = await runtime.service.get(principal=caller, instance_id=instance_id)
    if instance.status is not InstanceStatus.RUNNING:
        raise errors.NotRunning(instance.status, "get the token of")
    # A signed grant, not the notebook's own token (which never leaves the server): the
    # proxy accepts it as ``?token=`` or ``Authorization: token …``.
    grant = runtime.identity.grant(caller, instance.id,
                                   ttl_seconds=runtime.settings.session_ttl_seconds)
    return WireJSON({"token": grant.value})


@router.post("/{instance_id}/signed-url", response_model=w.SignedUrlResponse,
             responses=_ERRORS, summary="A short-lived link that opens the notebook (extension)")
async def signed_url(instance_id: str, runtime: RuntimeDep, caller: CallerDep) -> WireJSON:
    instance = await runtime.service.get(principal=caller, instance_id=instance_id)
    grant = runtime.identity.grant(caller, instance.id,
                                   ttl_seconds=runtime.settings.link_ttl_seconds)
    url = f"{runtime.settings.target_domain}/notebooks/{instance.id}/lab?token={grant.value}"
    return WireJSON({"url": url, "expires_at": grant.expires_at})
