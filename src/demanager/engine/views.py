"""Read models: each use case of the API answered as its wire body, in one call.

Routes stay thin (parse, one call here, return); everything a response needs
besides the instance — the flavors' sale state, the caller's counts per flavor,
the queues — is gathered here, from the store, never from a backend.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import orjson

from demanager import errors
from demanager.domain.catalog import Catalog
from demanager.domain.instance import Instance
from demanager.domain.lifecycle import QUEUED, InstanceStatus
from demanager.domain.payload import parse_json
from demanager.domain.policy import Policy, planned_stops
from demanager.domain.queueing import QueueEstimates, estimate_flavor_queue
from demanager.engine.clock import Clock
from demanager.engine.presenters import FlavorView, Scope, flavor_details, profile
from demanager.engine.service import InstanceService
from demanager.engine.wire import Bodies, WirePresenter
from demanager.identity.principal import Principal
from demanager.identity.service import IdentityService
from demanager.store.instances import InstanceRepository

Body = dict[str, Any]


class InstanceViews:
    def __init__(
        self,
        *,
        service: InstanceService,
        repository: InstanceRepository,
        catalog: Catalog,
        identity: IdentityService,
        clock: Clock,
        target_domain: str,
        link_ttl_seconds: int,
        session_ttl_seconds: int,
    ) -> None:
        self._service = service
        self._repo = repository
        self._catalog = catalog
        self._identity = identity
        self._clock = clock
        self._target_domain = target_domain
        self._link_ttl = link_ttl_seconds
        self._session_ttl = session_ttl_seconds
        self._bodies = Bodies()

    # --- the contract's routes --------------------------------------------------------

    async def create(self, *, principal: Principal, raw: bytes) -> Body:
        instance = await self._service.create(principal=principal, body=parse_json(raw))
        return (await self._present(principal, [instance]))[0]

    async def list(self, *, principal: Principal, params: Mapping[str, str]) -> Body:
        total, page, counts = await self._service.list(principal=principal, params=params)
        return {"total_count": total,
                "instances": await self._encoded(principal, page, counts)}

    async def get(self, *, principal: Principal, instance_id: str) -> orjson.Fragment:
        """The instance's body, encoded (``FastWireJSON`` sends it as it is)."""
        instance, counts = await self._service.view(principal=principal, instance_id=instance_id)
        return (await self._encoded(principal, [instance], counts))[0]

    async def update(self, *, principal: Principal, instance_id: str, raw: bytes) -> Body:
        await self._service.get(principal=principal, instance_id=instance_id)
        instance = await self._service.update(
            principal=principal, instance_id=instance_id, body=parse_json(raw)
        )
        return (await self._present(principal, [instance]))[0]

    async def delete(self, *, principal: Principal, instance_id: str) -> Body:
        deleted = await self._service.delete(principal=principal, instance_id=instance_id)
        return {"instance_id": deleted}

    async def act(self, *, principal: Principal, instance_id: str, raw: bytes) -> Body:
        await self._service.get(principal=principal, instance_id=instance_id)
        current, previous = await self._service.act(
            principal=principal, instance_id=instance_id, body=parse_json(raw)
        )
        return {"current_status": current.value, "previous_state": previous.value}

    async def stops(self, *, principal: Principal, instance_id: str) -> Body:
        """When the current run will stop, and why (the lifecycle policy, extension)."""
        instance = await self._service.get(principal=principal, instance_id=instance_id)
        return run_stops(instance, self._service.policy)

    async def extend(self, *, principal: Principal, instance_id: str, raw: bytes) -> Body:
        await self._service.get(principal=principal, instance_id=instance_id)
        instance = await self._service.extend(
            principal=principal, instance_id=instance_id, body=parse_json(raw)
        )
        return run_stops(instance, self._service.policy)

    async def token(self, *, principal: Principal, instance_id: str) -> Body:
        """The historical token route (§2.7): a signed grant the proxy accepts as
        ``?token=`` or ``Authorization: token …``, never the notebook's own token (which
        never leaves the server)."""
        instance = await self._service.get(principal=principal, instance_id=instance_id)
        if instance.status is not InstanceStatus.RUNNING:
            raise errors.NotRunning(instance.status, "get the token of")
        grant = self._identity.grant(principal, instance.id, ttl_seconds=self._session_ttl)
        return {"token": grant.value}

    async def signed_url(self, *, principal: Principal, instance_id: str) -> Body:
        """A short-lived link that opens the notebook directly (extension)."""
        instance = await self._service.get(principal=principal, instance_id=instance_id)
        grant = self._identity.grant(principal, instance.id, ttl_seconds=self._link_ttl)
        url = f"{self._target_domain}/notebooks/{instance.id}/lab?token={grant.value}"
        return {"url": url, "expires_at": grant.expires_at}

    # --- extensions -------------------------------------------------------------------

    def profiles(self) -> Body:
        return {"profiles": [profile(p).model_dump(mode="json", exclude_unset=True)
                             for p in self._catalog.profiles.values()]}

    async def flavors(self, *, principal: Principal) -> Body:
        # The shared pool's capacity and queues: the route names no pool.
        names = list(self._catalog.flavors)
        sold_out = frozenset([(None, n) for n in names if await self._service.sold_out(n)])
        counts = await self._repo.count_by_flavor(principal.project_id, principal.user_id)
        free = [(None, f.name) for f in self._catalog.flavors.values() if f.free]
        queues, estimates = await self._queues(free, self._clock.now_ms())
        view = FlavorView(sold_out=sold_out, counts=counts, user_name=principal.user_name,
                          project_id=principal.project_id, queues=queues, estimates=estimates)
        return {"flavors": [flavor_details(f, view).model_dump(mode="json", exclude_unset=True)
                            for f in self._catalog.flavors.values()]}

    # --- presentation -----------------------------------------------------------------

    async def _flavor_view(
        self,
        principal: Principal,
        instances: Sequence[Instance],
        counts: Mapping[str, int] | None,
        now_ms: int,
    ) -> FlavorView:
        scopes = {(i.pool_id, i.flavor) for i in instances}
        sold_out = frozenset(
            [(pool, n) for pool, n in scopes if await self._service.sold_out(n, pool)]
        )
        if counts is None:
            counts = await self._repo.count_by_flavor(principal.project_id, principal.user_id)
        queued = {(i.pool_id, i.flavor) for i in instances if i.status in QUEUED} | {
            (pool, n) for pool, n in sold_out
            if (f := self._catalog.flavors.get(n)) is not None and f.free
        }
        queues, estimates = await self._queues(queued, now_ms)
        return FlavorView(sold_out=sold_out, counts=counts, user_name=principal.user_name,
                          project_id=principal.project_id, queues=queues, estimates=estimates)

    async def _queues(
        self, scopes: Iterable[Scope], now_ms: int
    ) -> tuple[dict[Scope, builtins.list[str]], dict[Scope, QueueEstimates]]:
        """Each scope's queue and its estimates, from one read of its holders and queue."""
        queues: dict[Scope, builtins.list[str]] = {}
        estimates: dict[Scope, QueueEstimates] = {}
        for pool, name in scopes:
            holders, waiting, finished = await self._repo.queue_state(name, pool)
            queues[(pool, name)] = [w.id for w in waiting]
            flavor = self._catalog.flavors.get(name)
            if flavor is not None:
                # The scope's own capacity: a dedicated pool's, or the flavor's (shared).
                scoped = replace(flavor, capacity=self._catalog.capacity_of(pool, name))
                estimates[(pool, name)] = estimate_flavor_queue(
                    scoped, holders, waiting, now_ms=now_ms, finished=finished)
        return queues, estimates

    async def _present(
        self,
        principal: Principal,
        instances: Sequence[Instance],
        counts: Mapping[str, int] | None = None,
    ) -> builtins.list[Body]:
        """Wire dicts of ``instances``; ``counts`` (the caller's instances per flavor) is
        queried when not already at hand."""
        now = self._clock.now_ms()
        view = await self._flavor_view(principal, instances, counts, now)
        presenter = WirePresenter(self._catalog, self._target_domain, view)
        return [presenter.instance(i, now_ms=now) for i in instances]

    async def _encoded(
        self,
        principal: Principal,
        instances: Sequence[Instance],
        counts: Mapping[str, int],
    ) -> builtins.list[orjson.Fragment]:
        """What ``_present`` gives, encoded, and remembered while unchanged: for the
        instances of the read routes, which the store shares between requests."""
        now = self._clock.now_ms()
        view = await self._flavor_view(principal, instances, counts, now)
        presenter = WirePresenter(self._catalog, self._target_domain, view, self._bodies)
        return [presenter.encoded(i, now_ms=now) for i in instances]


def run_stops(instance: Instance, policy: Policy) -> Body:
    """The wire form of a run's planned stops. The idle stop depends on activity only the
    engine reads, so it is given as the allowance rather than a time."""
    running = instance.status is InstanceStatus.RUNNING
    idle = policy.idle_timeout_ms + instance.extended_ms if policy.judges_idle else None
    return {
        "id": instance.id,
        "status": instance.status.value,
        "stops": [
            {"reason": stop.reason.value, "at": stop.at_ms, "why": stop.why}
            for stop in planned_stops(instance, policy, None)
        ],
        "idle_timeout_seconds": idle // 1000 if idle is not None and running else None,
        "warn_before_seconds": policy.warn_before_ms // 1000,
        "extended_seconds": instance.extended_ms // 1000 if running else 0,
        "extension_left_seconds": max(0, policy.max_extension_ms - instance.extended_ms) // 1000
        if running else 0,
    }
