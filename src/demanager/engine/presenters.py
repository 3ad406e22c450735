"""Domain objects to wire models (contract §3). Explicit, field by field."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from demanager.domain.catalog import Catalog, Flavor, Profile
from demanager.domain.instance import Instance, Storage
from demanager.domain.lifecycle import FAILED, HOLDS_RESOURCES, QUEUED
from demanager.domain.lifecycle import InstanceStatus as S
from demanager.domain.queueing import QueueEstimates
from demanager.schemas import instances as w


def profile(p: Profile) -> w.Profile:
    model = w.Profile(
        id=p.id,
        name=p.name,
        description=p.description,
        de_type="Notebook",
        flavor_type=p.flavor_type,
        provision=w.Provision(
            type="Docker",
            spec=w.ProvisionSpec(
                engine="CCE",
                params=w.DockerParams(
                    namespace=p.namespace, image_name=p.image_name, image_tag=p.image_tag,
                    annotations=None,
                ),
            ),
        ),
    )
    if p.provision_annotations:
        model.provision.annotations = dict(p.provision_annotations)
    if p.labels:
        model.labels = dict(p.labels)
    return model


Scope = tuple[str | None, str]
"""(pool id, flavor name): capacity and queues are per flavor in each pool; ``None`` is
the shared pool."""


@dataclass(frozen=True)
class FlavorView:
    """Per-request facts about flavors: sold out or not, the caller's counts, the queues."""

    sold_out: frozenset[Scope]
    counts: Mapping[str, int]
    user_name: str
    project_id: str
    """The caller's project: with ``user_name``, what ``is_permitted`` is decided for."""
    queues: Mapping[Scope, Sequence[str]] = field(default_factory=dict)
    """Free flavor's scope -> ids of the instances waiting for it, first in line first."""
    estimates: Mapping[Scope, QueueEstimates] = field(default_factory=dict)
    """Free flavor's scope -> each waiting instance's rank and expected admission (§3.16)."""


def flavor_details(f: Flavor, view: FlavorView, pool_id: str | None = None) -> w.FlavorDetails:
    """``pool_id``: the pool whose capacity and queue the details describe."""
    scope = (pool_id, f.name)
    model = w.FlavorDetails(
        name=f.name,
        status="soldOut" if scope in view.sold_out else "onSale",
        type=f.type,
        params=dict(f.params),
    )
    model.promo_type = f.promo_type
    model.storage_list = list(f.storage_list)
    model.is_permitted = f.permits(view.user_name, view.project_id)
    model.instance_num = view.counts.get(f.name, 0)
    model.store_time = f.store_time
    if f.duration is not None:
        model.duration = f.duration
    if f.free and (scope in view.sold_out or view.queues.get(scope)):
        model.queuing_num = len(view.queues.get(scope, ()))
        estimate = view.estimates.get(scope)
        left = estimate.next_remain_time if estimate is not None else None
        model.queue_left_time = left if left is not None else 0
    return model


GPUS_PARAM = "gpus"
"""``spec.extend_params`` key of the GPUs assigned to the instance, comma-separated."""


def extend_params(i: Instance) -> dict[str, str] | None:
    """The contract's extension point (§3.9), ``null`` otherwise: the GPUs assigned to
    the instance while it holds them, as ``CUDA_VISIBLE_DEVICES`` names them."""
    if i.gpus and i.status in HOLDS_RESOURCES:
        return {GPUS_PARAM: ",".join(i.gpus)}
    return None


def storage(s: Storage) -> w.Storage:
    loc = s.location
    location = w.Location(path=loc.path)
    if s.type == "evs":
        location.volume_size = loc.volume_size
        location.volume_unit = "GB"
    elif s.type == "obsfs":
        location.mount_path = loc.mount_path
        location.access_modes = loc.access_modes
    return w.Storage(type=s.type, location=location)


@dataclass(frozen=True)
class Presenter:
    """Maps instances for one response; the profile and flavor parts, identical for
    every instance of a profile or flavor, are built once per response.

    The wire models are the reference of the format: responses are built by
    ``engine/wire.py``, which a test holds to exactly what these models dump."""

    catalog: Catalog
    target_domain: str
    _profiles: dict[str, w.Profile] = field(default_factory=dict)
    _flavors: dict[Scope, w.FlavorDetails] = field(default_factory=dict)

    def instance(self, i: Instance, *, now_ms: int, flavors: FlavorView) -> w.Instance:
        auto_stop = w.AutoStop(enable=i.auto_stop.enable, prompt=i.auto_stop.prompt)
        if i.auto_stop.duration is not None:
            auto_stop.duration = i.auto_stop.duration
        remain = i.remain_time(now_ms)
        if remain is not None and i.stop_at is not None:
            auto_stop.stop_timestamp = i.stop_at
            auto_stop.remain_time = remain
        # The proxy's address, never the workload's: it holds no secret (§3.9).
        url = f"{self.target_domain}/notebooks/{i.id}/" if i.status is S.RUNNING else ""
        annotations = {**i.annotations, "target_domain": self.target_domain, "url": url}
        failed = None
        if i.failed is not None:
            failed = w.FailedReasons(
                code=i.failed.code, message=i.failed.message, detail=dict(i.failed.detail)
            )
        spec = w.NotebookSpec(
            storage=storage(i.storage),
            extend_storage=None
            if i.extend_storage is None
            else [storage(s) for s in i.extend_storage],
            auto_stop=auto_stop,
            annotations=annotations,
            repository=None,
            failed_reasons=failed,
            extend_params=extend_params(i),
        )
        if i.reserved_at is not None and i.status in HOLDS_RESOURCES:
            # From the admission that reserved the slot until the run gives it back.
            spec.resource_reserved_timestamp = i.reserved_at
        model = w.Instance(
            id=i.id,
            name=i.name,
            description=i.description,
            status=i.status.value,
            creation_timestamp=str(i.created_at),
            latest_update_timestamp=str(i.updated_at),
            profile=self.profile_of(i.profile_id),
            flavor=i.flavor,
            flavor_details=self.flavor_of(i.flavor, i.pool_id, flavors),
            spec=spec,
            workspace=w.Reference(id=i.workspace_id),
            ai_project=w.Reference(id=i.ai_project_id),
            user=w.User(id=i.user_id, name=i.user_name),
        )
        if i.pool_id is not None:
            pool = self.catalog.pools.get(i.pool_id)
            # A pool open to every project is, for this caller, theirs.
            owner = pool.owner_project if pool and pool.owner_project else i.project_id
            model.pool = w.Pool(id=i.pool_id, name=pool.name if pool else i.pool_id,
                                type=pool.type if pool else "USER_DEFINED",
                                owner=w.PoolOwner(project_id=owner))
        if i.status in FAILED and i.failed is not None:
            model.error_code = i.failed.code
        if i.status in QUEUED:
            model.queuing_info = self._queuing_info(i, model.flavor_details, flavors)
        return model

    @staticmethod
    def _queuing_info(i: Instance, details: w.FlavorDetails, view: FlavorView) -> w.QueuingInfo:
        """Contract §3.16; ``rank`` counts from 1 within the flavor's queue."""
        queue = list(view.queues.get((i.pool_id, i.flavor), ()))
        rank = queue.index(i.id) + 1 if i.id in queue else len(queue) + 1
        info = w.QueuingInfo(
            id=i.id, name=i.name, de_type="Notebook", flavor=i.flavor, flavor_details=details,
            status=i.status.value, begin_timestamp=i.requested_at or i.updated_at, rank=rank,
        )
        estimates = view.estimates.get((i.pool_id, i.flavor))
        found = estimates.entries.get(i.id) if estimates is not None else None
        if found is not None:
            info.rank = found.rank
            if found.end_timestamp is not None and found.remain_time is not None:
                info.end_timestamp = found.end_timestamp
                info.remain_time = found.remain_time
        return info

    def profile_of(self, profile_id: str) -> w.Profile:
        if profile_id not in self._profiles:
            self._profiles[profile_id] = self._profile(profile_id)
        return self._profiles[profile_id]

    def flavor_of(self, name: str, pool_id: str | None, view: FlavorView) -> w.FlavorDetails:
        if (pool_id, name) not in self._flavors:
            self._flavors[(pool_id, name)] = self._flavor(name, pool_id, view)
        return self._flavors[(pool_id, name)]

    def _profile(self, profile_id: str) -> w.Profile:
        found = self.catalog.profiles.get(profile_id)
        if found is not None:
            return profile(found)
        # A profile removed from the catalog still shows what it was called.
        return w.Profile(
            id=profile_id, name=profile_id, description="", flavor_type="CPU",
            de_type="Notebook",
            provision=w.Provision(type="Docker", spec=w.ProvisionSpec(
                engine="CCE", params=w.DockerParams(
                    namespace="", image_name="", image_tag="", annotations=None))),
        )

    def _flavor(self, name: str, pool_id: str | None, view: FlavorView) -> w.FlavorDetails:
        found = self.catalog.flavors.get(name)
        if found is not None:
            return flavor_details(found, view, pool_id)
        return w.FlavorDetails(name=name, status="soldOut", type="CPU", params={})
