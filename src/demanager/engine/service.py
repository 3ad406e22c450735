"""Use cases behind the API and the CLI: validate, check the store, record intent.

Nothing here calls a backend or waits: caller-driven status changes (contract
§4.3) are written through the repository's guarded ``transition`` and the
reconciler is told to act.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from demanager import errors
from demanager.domain import events, tenancy
from demanager.domain.catalog import Catalog
from demanager.domain.instance import (
    Desired,
    Instance,
    InstanceId,
    new_instance_id,
)
from demanager.domain.lifecycle import HOLDS_RESOURCES, TRANSITIONS, Operation, decide
from demanager.domain.lifecycle import InstanceStatus as S
from demanager.domain.policy import Policy, extension, planned_stops
from demanager.domain.validation import (
    CreateContext,
    ListQuery,
    validate_action,
    validate_create,
    validate_extension,
    validate_list,
    validate_update,
)
from demanager.engine.buckets import BucketCheck
from demanager.engine.clock import Clock
from demanager.engine.run_terms import stop_deadline
from demanager.identity.principal import Principal
from demanager.store.instances import InstanceRepository
from demanager.store.projects import ProjectRepository

_DESIRED_AFTER = {
    Operation.START: Desired.RUNNING,
    Operation.RESTART: Desired.RUNNING,
    Operation.QUEUE: Desired.RUNNING,
    Operation.STOP: Desired.STOPPED,
    Operation.DEQUEUE: Desired.STOPPED,
}
_RETRIES = 5


class InstanceService:
    def __init__(
        self,
        *,
        repository: InstanceRepository,
        projects: ProjectRepository,
        catalog: Catalog,
        clock: Clock,
        notify: Callable[[str], None],
        instance_quota: int,
        min_auto_stop: int,
        object_storage: bool,
        check_buckets: BucketCheck | None = None,
        policy: Policy | None = None,
    ) -> None:
        self._policy = policy or Policy()
        self._repo = repository
        self._projects = projects
        self._catalog = catalog
        self._clock = clock
        self._notify = notify
        self._default_quota = instance_quota
        self._min_auto_stop = min_auto_stop
        self._object_storage = object_storage
        self._check_buckets = check_buckets

    @property
    def catalog(self) -> Catalog:
        return self._catalog

    async def create(self, *, principal: Principal, body: Any) -> Instance:
        owner = principal.owner()
        request = validate_create(
            body,
            CreateContext(
                catalog=self._catalog,
                user_name=owner.user_name,
                project_id=owner.project_id,
                object_storage=self._object_storage,
                min_auto_stop=self._min_auto_stop,
            ),
        )
        flavor = self._catalog.flavors[request.flavor]
        # A valid request to a frozen project answers 6326 before its name and quotas are
        # looked at, as an action checks frozen before state (§5); the store's insert
        # checks it again, atomically with a freeze.
        project = await self._projects.get(owner.project_id)
        tenancy.ensure_project_open(project)
        quota = tenancy.instance_quota(project, self._default_quota)
        # Reads first, so that the errors come in the contract's order (name, quota, flavor
        # quota, capacity); the atomic guards are the store's unique index and counters,
        # taken in that order too.
        if await self._repo.name_in_use(owner.project_id, request.name):
            raise errors.NameTaken(request.name)
        if await self._repo.count_live(owner.project_id) >= quota:
            raise errors.InstanceQuotaReached(quota)
        if flavor.per_project_quota is not None and (
            await self._repo.count_live(owner.project_id, flavor.name) >= flavor.per_project_quota
        ):
            raise errors.FlavorQuotaReached(flavor.name, flavor.per_project_quota)
        if self._check_buckets is not None:
            # Last of the checks, as it asks the store: no instance exists for a bucket
            # the project may not or cannot read (6319, 6320).
            await self._check_buckets(owner.project_id, request.storage, request.extend_storage)
        now = self._clock.now_ms()
        instance = Instance(
            id=new_instance_id(),
            project_id=owner.project_id,
            name=request.name,
            description=request.description,
            profile_id=request.profile_id,
            flavor=request.flavor,
            storage=request.storage,
            extend_storage=request.extend_storage,
            auto_stop=request.auto_stop,
            annotations=request.annotations,
            workspace_id=request.workspace_id,
            pool_id=request.pool_id,
            ai_project_id=request.ai_project_id,
            user_id=owner.user_id,
            user_name=owner.user_name,
            status=S.CREATING,
            desired=Desired.RUNNING,
            created_at=now,
            updated_at=now,
            requested_at=now,
        )
        # A free flavor's create waits behind those already waiting to start (contract §4.5);
        # frozen ones are passed over at admission, so they hold nobody back.
        if flavor.free and await self._repo.queued(flavor.name, request.pool_id, startable=True):
            instance = instance.evolve(status=S.CREATE_QUEUING)
        flavor_quota = flavor.per_project_quota
        actor = events.user(owner.user_name)
        try:
            # The store takes the slot with the insert, atomically (FlavorSoldOut if full),
            # and the host's share of it, GPUs included (in the returned instance).
            instance = await self._repo.add(
                instance, project_quota=quota, flavor_quota=flavor_quota, actor=actor
            )
        except errors.FlavorSoldOut:
            # A full free flavor queues, unless the host could never fit it.
            if not flavor.free or not self._repo.fits_host(flavor.name):
                raise
            # A full free flavor queues the create instead; the engine admits it.
            instance = instance.evolve(status=S.CREATE_QUEUING)
            await self._repo.add(
                instance, project_quota=quota, flavor_quota=flavor_quota, actor=actor
            )
        self._notify(instance.id)
        return instance

    async def list(
        self, *, principal: Principal, params: Mapping[str, str]
    ) -> tuple[int, list[Instance], dict[str, int]]:
        """(total matches, the page, the caller's instance count per flavor).

        ``show_self=false`` widens the list to the whole project for an admin only; a
        member always sees their own instances.
        """
        query: ListQuery = validate_list(params, self._catalog)
        if not principal.sees_project and not query.show_self:
            query = replace(query, show_self=True)
        return await self._repo.list(principal.project_id, query, principal.user_id)

    async def get(self, *, principal: Principal, instance_id: str) -> Instance:
        return await self._repo.get_live(
            principal.project_id, instance_id, principal.owner_filter()
        )

    async def view(
        self, *, principal: Principal, instance_id: str
    ) -> tuple[Instance, dict[str, int]]:
        """The instance and the caller's instance count per flavor (for ``flavor_details``)."""
        return await self._repo.view(
            principal.project_id, instance_id, principal.user_id, principal.owner_filter()
        )

    async def update(self, *, principal: Principal, instance_id: str, body: Any) -> Instance:
        for _ in range(_RETRIES):
            instance = await self.get(principal=principal, instance_id=instance_id)
            request = validate_update(
                body,
                current=instance.auto_stop,
                status=instance.status,
                min_auto_stop=self._min_auto_stop,
            )
            changes: dict[str, Any] = {}
            if request.description is not None and request.description != instance.description:
                changes["description"] = request.description
            if request.auto_stop is not None and request.auto_stop != instance.auto_stop:
                changes["auto_stop"] = request.auto_stop
                if not request.auto_stop.enable and instance.stop_at is not None:
                    # Disabling cancels the caller's running countdown now, but not a
                    # free flavor's forced stop (§4.4), which counts from the same start.
                    changes["stop_at"] = self._forced_stop(instance)
            if not changes:
                return instance
            try:
                return await self._repo.save(instance, now_ms=self._clock.now_ms(), **changes)
            except errors.ConcurrentUpdate:
                continue
        raise errors.Busy()

    def _forced_stop(self, instance: Instance) -> int | None:
        """When the flavor alone stops the current run, if it does."""
        if instance.running_since is None:
            return None
        without_countdown = instance.evolve(auto_stop=replace(instance.auto_stop, enable=False))
        return stop_deadline(without_countdown, self._catalog, instance.running_since)

    async def delete(self, *, principal: Principal, instance_id: str) -> InstanceId:
        for _ in range(_RETRIES):
            instance = await self.get(principal=principal, instance_id=instance_id)
            try:
                await record_delete(
                    self._repo, self._catalog, instance, self._clock.now_ms(),
                    actor=events.user(principal.user_name),
                )
            except errors.ConcurrentUpdate:
                continue
            self._notify(instance.id)
            return instance.id
        raise errors.Busy()

    async def act(self, *, principal: Principal, instance_id: str, body: Any) -> tuple[S, S]:
        """Apply an action; returns (current_status, previous_state)."""
        await self.get(principal=principal, instance_id=instance_id)
        operation = validate_action(body)
        for _ in range(_RETRIES):
            instance = await self.get(principal=principal, instance_id=instance_id)
            flavor = self._catalog.flavors.get(instance.flavor)
            free = bool(flavor and flavor.free)
            tenancy.ensure_not_frozen(instance.frozen, instance.status, operation)
            target = decide(instance.status, operation, free_flavor=free)
            assert target is not None  # only delete is allowed without a status
            # A free flavor's start waits behind those already waiting (contract §4.5).
            if (
                target is S.STARTING
                and free
                and instance.status not in HOLDS_RESOURCES
                and S.START_QUEUING in TRANSITIONS[instance.status]
                and await self._repo.queued(instance.flavor, instance.pool_id, startable=True)
            ):
                target = S.START_QUEUING
            changes: dict[str, Any] = {"desired": _DESIRED_AFTER[operation]}
            if target is S.STOPPING:
                changes["stop_at"] = None
            if target in (S.STARTING, S.RESTARTING, S.STOPPED):
                changes["failed"] = None  # only a failed instance carries a reason (§3.9)
            try:
                # Entering STARTING from a status that holds nothing takes a slot, in the
                # same transaction (NotEnoughResources when none is free).
                target = await self._write_action(
                    instance, target, free, changes, events.user(principal.user_name)
                )
            except errors.ConcurrentUpdate:
                continue
            self._notify(instance.id)
            return target, instance.status
        raise errors.Busy()

    @property
    def policy(self) -> Policy:
        return self._policy

    async def extend(self, *, principal: Principal, instance_id: str, body: Any) -> Instance:
        """Postpone every stop of the instance's current run, within the operator's limit."""
        await self.get(principal=principal, instance_id=instance_id)
        seconds = validate_extension(body)
        actor = events.user(principal.user_name)
        for _ in range(_RETRIES):
            instance = await self.get(principal=principal, instance_id=instance_id)
            if instance.status is not S.RUNNING:
                raise errors.NotRunning(instance.status.value, "extend")
            changes = extension(instance, self._policy, seconds)
            after = instance.evolve(**changes)
            stops = planned_stops(after, self._policy, None)
            draft = events.extended(
                actor, seconds, after.extended_ms // 1000, stops[0] if stops else None
            )
            try:
                saved = await self._repo.save(
                    instance, now_ms=self._clock.now_ms(), event=draft, **changes
                )
            except errors.ConcurrentUpdate:
                continue
            self._notify(instance.id)
            return saved
        raise errors.Busy()

    async def _write_action(
        self, instance: Instance, target: S, free: bool, changes: dict[str, Any], actor: str
    ) -> S:
        """Write the action's status; a full free flavor's start queues instead (§4.3 ⁴),
        a full other flavor's answers 6360 and changes nothing."""
        now = self._clock.now_ms()
        try:
            await self._repo.transition(
                instance, target, now_ms=now, requested_at=now, actor=actor, **changes
            )
        except errors.NotEnoughResources:
            if (
                not free
                or S.START_QUEUING not in TRANSITIONS[instance.status]
                or not self._repo.fits_host(instance.flavor)
            ):
                raise
            target = S.START_QUEUING
            queued = {k: v for k, v in changes.items() if k != "failed"}  # as `queue` keeps it
            await self._repo.transition(
                instance, target, now_ms=now, requested_at=now, actor=actor, **queued
            )
        return target

    async def sold_out(self, flavor_name: str, pool_id: str | None = None) -> bool:
        """Whether the flavor's slots in the pool (``None``: shared) are all taken."""
        return await self._repo.sold_out(pool_id, flavor_name)


async def record_delete(
    repository: InstanceRepository,
    catalog: Catalog,
    instance: Instance,
    now_ms: int,
    *,
    actor: str,
) -> None:
    """Delete ``instance`` as a caller would (§4.3; the refusing StateError otherwise):
    the row becomes a tombstone whose workload and volume the engine then removes, and
    its quota counters are given back in the same write."""
    flavor = catalog.flavors.get(instance.flavor)
    decide(instance.status, Operation.DELETE, free_flavor=bool(flavor and flavor.free))
    await repository.transition(
        instance,
        S.DELETED,
        now_ms=now_ms,
        desired=Desired.DELETED,
        cleanup_pending=True,
        stop_at=None,
        actor=actor,
    )
