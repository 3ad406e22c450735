"""Instances straight to wire dicts: the read path's presenter.

Building a ``schemas.instances.Instance`` per instance and dumping it again cost
more than the rest of a list request (docs/benchmarks.md, Read path). This module
builds the same plain dicts directly, for an encoder (orjson) to write as they are.

The pydantic models stay the one definition of the wire format and of the OpenAPI
document; what this module produces must be exactly what ``Presenter.instance(...)
.model_dump(mode="json", exclude_unset=True)`` gives: the models' field order, and a
key left out exactly where the model leaves it unset (``null`` is not "absent").
tests/unit/test_wire_golden.py holds the two to the same output.

The profile and flavor parts, the same for every instance of a profile or flavor,
are dumped from their models once per response.

A list or a GET sends each instance encoded by ``WirePresenter.encoded``, which
remembers an instance's bytes in ``Bodies`` while nothing they are made of changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from demanager.domain.catalog import Catalog
from demanager.domain.instance import Instance, Storage
from demanager.domain.lifecycle import FAILED, HOLDS_RESOURCES, QUEUED
from demanager.domain.lifecycle import InstanceStatus as S
from demanager.engine.presenters import FlavorView, Presenter, Scope, extend_params
from demanager.store.instances import READ_MEMO_SIZE

Dict = dict[str, Any]


def storage(s: Storage) -> Dict:
    loc = s.location
    if s.type == "evs":
        location: Dict = {"path": loc.path, "volume_size": loc.volume_size, "volume_unit": "GB"}
    elif s.type == "obsfs":
        location = {"path": loc.path, "mount_path": loc.mount_path,
                    "access_modes": loc.access_modes}
    else:
        location = {"path": loc.path}
    return {"type": s.type, "location": location}


class Bodies:
    """Encoded bodies of the instances the API sent lately.

    An instance's body is made of the instance, the catalog and the server's address
    (fixed for a server's life), the flavor's details (the caller's counts, the sale
    state: per response), its remaining time (per second) and, while it waits, its queue.
    The store hands out one object per unchanged row (``store/memo.py``), so an entry is
    found by that object and holds only while the details and the remaining time are
    what they were; a waiting instance is never kept. Anything else changed the row,
    and so the object.
    """

    __slots__ = ("_capacity", "_entries")

    def __init__(self, capacity: int = READ_MEMO_SIZE) -> None:
        self._capacity = capacity
        # id(instance) -> (instance, remaining time, flavor details, body). Holding the
        # instance keeps its id from being reused while the entry lives.
        self._entries: dict[int, tuple[Instance, int | None, bytes, orjson.Fragment]] = {}

    def find(self, i: Instance, remain: int | None, flavor: bytes) -> orjson.Fragment | None:
        entry = self._entries.get(id(i))
        if entry is not None and entry[0] is i and entry[1] == remain and entry[2] == flavor:
            return entry[3]
        return None

    def keep(self, i: Instance, remain: int | None, flavor: bytes,
             body: orjson.Fragment) -> None:
        entries = self._entries
        if id(i) not in entries and len(entries) >= self._capacity:
            del entries[next(iter(entries))]
        entries[id(i)] = (i, remain, flavor, body)

    def __len__(self) -> int:
        return len(self._entries)


@dataclass
class WirePresenter:
    """Wire dicts of the instances of one response."""

    catalog: Catalog
    target_domain: str
    flavors: FlavorView
    bodies: Bodies | None = None
    """Where ``encoded`` keeps bodies between responses; None: encode every time."""
    _models: Presenter = field(init=False)
    _profiles: dict[str, Dict] = field(default_factory=dict, init=False)
    _flavors: dict[Scope, Dict] = field(default_factory=dict, init=False)
    _flavor_bytes: dict[Scope, bytes] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self._models = Presenter(self.catalog, self.target_domain)

    def instance(self, i: Instance, *, now_ms: int) -> Dict:
        a = i.auto_stop
        auto_stop: Dict = {"enable": a.enable}
        if a.duration is not None:
            auto_stop["duration"] = a.duration
        auto_stop["prompt"] = a.prompt
        status = i.status
        remain = i.remain_time(now_ms)
        if remain is not None and i.stop_at is not None:
            auto_stop["stop_timestamp"] = i.stop_at
            auto_stop["remain_time"] = remain
        # The proxy's address, never the workload's: it holds no secret (§3.9).
        url = f"{self.target_domain}/notebooks/{i.id}/" if status is S.RUNNING else ""
        failed = i.failed
        spec: Dict = {
            "storage": storage(i.storage),
            "extend_storage": None
            if i.extend_storage is None
            else [storage(s) for s in i.extend_storage],
            "auto_stop": auto_stop,
            "annotations": {**i.annotations, "target_domain": self.target_domain, "url": url},
            "repository": None,
            "failed_reasons": None if failed is None else {
                "code": failed.code, "message": failed.message, "detail": dict(failed.detail)},
            "extend_params": extend_params(i),
        }
        if i.reserved_at is not None and status in HOLDS_RESOURCES:
            spec["resource_reserved_timestamp"] = i.reserved_at
        details = self._flavor(i.flavor, i.pool_id)
        body: Dict = {
            "id": i.id,
            "name": i.name,
            "description": i.description,
            "status": status.value,
            "creation_timestamp": str(i.created_at),
            "latest_update_timestamp": str(i.updated_at),
            "profile": self._profile(i.profile_id),
            "flavor": i.flavor,
            "flavor_details": details,
        }
        if i.pool_id is not None:
            pool = self.catalog.pools.get(i.pool_id)
            # A pool open to every project is, for this caller, theirs.
            owner = pool.owner_project if pool and pool.owner_project else i.project_id
            body["pool"] = {"id": i.pool_id, "name": pool.name if pool else i.pool_id,
                            "type": pool.type if pool else "USER_DEFINED",
                            "owner": {"project_id": owner}}
        body["spec"] = spec
        body["workspace"] = {"id": i.workspace_id}
        body["ai_project"] = {"id": i.ai_project_id}
        if status in FAILED and failed is not None:
            body["error_code"] = failed.code
        if status in QUEUED:
            body["queuing_info"] = self._queuing_info(i, details)
        body["user"] = {"id": i.user_id, "name": i.user_name}
        return body

    def encoded(self, i: Instance, *, now_ms: int) -> orjson.Fragment:
        """``instance(i)`` encoded: the bytes orjson writes for it, to send as they are."""
        bodies = self.bodies
        if bodies is None or i.status in QUEUED:
            return orjson.Fragment(orjson.dumps(self.instance(i, now_ms=now_ms)))
        remain = i.remain_time(now_ms)
        scope = (i.pool_id, i.flavor)
        flavor = self._flavor_bytes.get(scope)
        if flavor is None:
            flavor = self._flavor_bytes[scope] = orjson.dumps(self._flavor(i.flavor, i.pool_id))
        body = bodies.find(i, remain, flavor)
        if body is None:
            body = orjson.Fragment(orjson.dumps(self.instance(i, now_ms=now_ms)))
            bodies.keep(i, remain, flavor, body)
        return body

    def _queuing_info(self, i: Instance, details: Dict) -> Dict:
        """Contract §3.16; ``rank`` counts from 1 within the flavor's queue."""
        view = self.flavors
        queue = list(view.queues.get((i.pool_id, i.flavor), ()))
        rank = queue.index(i.id) + 1 if i.id in queue else len(queue) + 1
        info: Dict = {
            "id": i.id, "name": i.name, "de_type": "Notebook", "flavor": i.flavor,
            "flavor_details": details, "status": i.status.value,
            "begin_timestamp": i.requested_at or i.updated_at,
        }
        estimates = view.estimates.get((i.pool_id, i.flavor))
        found = estimates.entries.get(i.id) if estimates is not None else None
        if found is not None:
            rank = found.rank
            if found.end_timestamp is not None and found.remain_time is not None:
                info["remain_time"] = found.remain_time
                info["end_timestamp"] = found.end_timestamp
        info["rank"] = rank
        return info

    def _profile(self, profile_id: str) -> Dict:
        found = self._profiles.get(profile_id)
        if found is None:
            found = self._profiles[profile_id] = self._models.profile_of(profile_id).model_dump(
                mode="json", exclude_unset=True)
        return found

    def _flavor(self, name: str, pool_id: str | None) -> Dict:
        found = self._flavors.get((pool_id, name))
        if found is None:
            found = self._flavors[(pool_id, name)] = self._models.flavor_of(
                name, pool_id, self.flavors).model_dump(mode="json", exclude_unset=True)
        return found
