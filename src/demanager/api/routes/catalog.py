"""Extension: read-only listings of the catalog's profiles and flavors."""

from __future__ import annotations

from fastapi import APIRouter

from demanager.api.dependencies import CallerDep, RuntimeDep
from demanager.api.responses import WireJSON, error_responses
from demanager.schemas import instances as w

router = APIRouter(prefix="/v1/{project_id}/demanager", tags=["catalog (extension)"])


@router.get("/profiles", response_model=w.ProfileList, responses=error_responses(),
            summary="Profiles instances can use")
async def list_profiles(runtime: RuntimeDep, _caller: CallerDep) -> WireJSON:
    return WireJSON(runtime.views.profiles())


@router.get("/flavors", response_model=w.FlavorList, responses=error_responses(),
            summary="Flavors instances can use")
async def list_flavors(runtime: RuntimeDep, caller: CallerDep) -> WireJSON:
    return WireJSON(await runtime.views.flavors(principal=caller))
