"""What the store tests write: a one-profile, one-flavor catalog and an instance row."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from demanager.domain.catalog import Catalog, Flavor, Profile
from demanager.domain.instance import (
    AutoStop,
    Desired,
    Instance,
    InstanceId,
    ProjectId,
    Storage,
    UserId,
)
from demanager.domain.lifecycle import InstanceStatus

CATALOG = Catalog(
    profiles={"prof": Profile("prof", "prof", "", "CPU", "ns", "img", "tag", None)},
    flavors={"flav": Flavor("flav", "CPU", {})},
)
USER = UserId("u" * 32)


def instance(n: int = 1, **changes: Any) -> Instance:
    """Instance ``DE-{n}`` named ``nb{n}`` of project ``p``, created at ``n``; ``changes``
    replace any field."""
    return replace(Instance(
        id=InstanceId(f"DE-{n}"), project_id=ProjectId("p"), name=f"nb{n}", description="",
        profile_id="prof", flavor="flav", storage=Storage("evs"), extend_storage=None,
        auto_stop=AutoStop(), annotations={}, workspace_id="0", pool_id=None,
        ai_project_id="default-ai-project", user_id=USER, user_name=USER[:1],
        status=InstanceStatus.CREATING, desired=Desired.RUNNING, created_at=n, updated_at=n,
        requested_at=n,
    ), **changes)
