"""Extension: read-only listings of the catalog's profiles and flavors."""

from __future__ import annotations

from fastapi import APIRouter

from demanager.api.dependencies import CallerDep, RuntimeDep
from demanager.api.presenters import FlavorView, flavor_details, profile
from demanager.api.responses import WireJSON, error_responses
from demanager.schemas import instances as w

router = APIRouter(prefix="/v1/{project_id}/demanager", tags=["catalog (extension)"])


@router.get("/profiles", response_model=w.ProfileList, responses=error_responses(),
            summary="Profiles instances can use")
async def list_profiles(runtime: RuntimeDep, _caller: CallerDep) -> WireJSON:
    profiles = [profile(p).model_dump(mode="json", exclude_unset=True)
                for p in runtime.catalog.profiles.values()]
    return WireJSON({"profiles": profiles})


@router.get("/flavors", response_model=w.FlavorList, responses=error_responses(),
            summary="Flavors instances can use")
async def list_flavors(runtime: RuntimeDep, caller: CallerDep) -> WireJSON:
    sold_out = frozenset(
        [name for name in runtime.catalog.flavors if await runtime.service.sold_out(name)]
    )
    counts = await runtime.instances.count_by_flavor(caller.project_id, caller.user_id)
    view = FlavorView(sold_out=sold_out, counts=counts, user_name=caller.user_name)
    flavors = [flavor_details(f, view).model_dump(mode="json", exclude_unset=True)
               for f in runtime.catalog.flavors.values()]
    return WireJSON({"flavors": flavors})
