"""The reconciler: load, observe, plan, act, persist, until the instance is at rest.

Level-triggered and idempotent: a periodic sweep (and a wake-up from the API
when it records new intent) submits every instance that may need work to a keyed
work queue. ``drive`` then repeats plan-and-act for that instance. Nothing held
in memory matters for correctness; after a crash the same loop converges again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Mapping
from typing import Any

from demanager import errors
from demanager.backends.base import Backend, Handle, LaunchSpec
from demanager.domain.catalog import Catalog
from demanager.domain.instance import Desired, FailedReason, Instance
from demanager.domain.lifecycle import QUEUED
from demanager.domain.lifecycle import InstanceStatus as S
from demanager.domain.planning import (
    DEFAULT_HEALTH_FAILURES,
    UNANSWERED_KEY,
    Observation,
    Step,
    Workload,
    plan,
    unanswered,
)
from demanager.engine.backoff import Backoff
from demanager.engine.clock import Clock
from demanager.engine.scheduler import stop_deadline, volume_overuse
from demanager.engine.workqueue import KeyedWorkQueue
from demanager.store.instances import InstanceRepository
from demanager.store.leases import LeaseRepository

log = logging.getLogger(__name__)

_FAILED_TARGET = {S.CREATING: S.CREATE_FAILED}
LEASE_TTL_MS = 15_000
MAX_LAUNCHES = 2
PURGE_INTERVAL_MS = 60_000
"""Launches per drive before a workload that keeps exiting fails the start."""


class Reconciler:
    def __init__(
        self,
        *,
        repository: InstanceRepository,
        leases: LeaseRepository,
        owner: str,
        backend: Backend,
        catalog: Catalog,
        clock: Clock,
        start_timeout: float,
        sweep_interval: float,
        concurrency: int,
        tombstone_retention: float = 7 * 86_400,
        health_failures: int = DEFAULT_HEALTH_FAILURES,
    ) -> None:
        self._repo = repository
        self._leases = leases
        self._owner = owner
        self._backend = backend
        self._catalog = catalog
        self._clock = clock
        self._start_timeout_ms = int(start_timeout * 1000)
        self._health_failures = health_failures
        self._sweep_interval = sweep_interval
        self._queue = KeyedWorkQueue(self.drive, concurrency)
        self._stopping = False
        self._observers = max(4, concurrency * 2)
        self._task: asyncio.Task[None] | None = None
        self._tombstone_retention_ms = int(tombstone_retention * 1000)
        self._next_purge_ms = 0

    # --- lifecycle of the reconciler itself -------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="reconciler sweep")

    async def stop(self, grace: float = 5.0) -> None:
        """Let every drive finish the step it is in (so no database call is cut in
        half), then cancel what is still waiting, and give up our leases."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._queue.drain()), grace)
        await self._queue.cancel()
        await self._leases.release_all(self._owner)

    def notify(self, instance_id: str) -> None:
        """The API recorded new intent for ``instance_id``: act on it now."""
        self._queue.submit(instance_id)

    async def sweep(self) -> None:
        """Submit every instance whose plan is not NOTHING (one query, no writes)."""
        limit = asyncio.Semaphore(self._observers)

        async def check(instance: Instance) -> None:
            async with limit:
                if await self._has_work(instance):
                    self._queue.submit(instance.id)

        candidates = [i for i in await self._repo.needing_attention() if not self._queue.busy(i.id)]
        await asyncio.gather(*(check(i) for i in candidates))
        await self._purge_tombstones()

    async def _purge_tombstones(self) -> None:
        """Deleted rows are kept a while (listable as DELETED), then removed: at most
        once a minute, one DELETE, so a sweep every few seconds costs no extra writes."""
        now = self._clock.now_ms()
        if now < self._next_purge_ms:
            return
        self._next_purge_ms = now + PURGE_INTERVAL_MS
        await self._repo.purge_tombstones(deleted_before_ms=now - self._tombstone_retention_ms)

    async def settle(self) -> None:
        """Run one sweep and wait for all work it started (tests and benchmarks)."""
        await self.sweep()
        await self._queue.drain()

    async def _reclaim_from_dead_neighbours(self) -> None:
        """Free leases of engines that ran on this host and whose process is gone.

        Owners are ``host:pid:nonce``; a restarted server need not wait for the
        leases of the one it replaces to run out.
        """
        host = socket.gethostname()
        for owner in await self._leases.owners():
            owner_host, _, pid_and_nonce = owner.partition(":")
            pid = pid_and_nonce.partition(":")[0]
            if owner_host != host or owner == self._owner:
                continue
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                log.info("releasing the leases of %s, which is gone", owner)
                await self._leases.release_all(owner)
            except (PermissionError, ValueError):
                continue

    async def _loop(self) -> None:
        with contextlib.suppress(Exception):
            await self._reclaim_from_dead_neighbours()
        while True:
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("sweep failed; retrying")
            await asyncio.sleep(self._sweep_interval)

    # --- one instance -----------------------------------------------------------------

    async def drive(self, instance_id: str) -> None:
        """Claim the instance, then plan and act until it is at rest.

        Most sweeps find nothing to do (a healthy RUNNING instance): that is decided
        by reading alone, so steady state costs no writes.
        """
        instance = await self._repo.load(instance_id)
        if instance is None or not await self._has_work(instance):
            return
        if not await self._claim(instance_id):
            return
        try:
            await self._drive(instance_id)
        finally:
            await self._leases.release(instance_id, self._owner)

    async def _has_work(self, instance: Instance) -> bool:
        try:
            observed = await self._backend.observe(instance.id, instance.handle)
        except errors.BackendError:
            return True  # let the drive deal with it, with its retries
        step = await self._plan(instance, observed)
        return step is not Step.NOTHING or self._lacks_endpoint(instance, observed)

    def _lacks_endpoint(self, instance: Instance, observed: Observation) -> bool:
        """RUNNING without a stored endpoint although the backend can name one."""
        handle = observed.handle or instance.handle
        return (
            instance.status is S.RUNNING
            and instance.endpoint is None
            and observed.workload is Workload.READY
            and bool(handle)
            and self._backend.endpoint(instance.id, handle or {}) is not None
        )

    async def _plan(self, instance: Instance, observed: Observation) -> Step:
        admissible = instance.status in QUEUED and await self._admissible(instance)
        return plan(
            instance,
            observed,
            self._clock.now_ms(),
            admissible=admissible,
            health_failures=self._health_failures,
        )

    async def _admissible(self, instance: Instance) -> bool:
        """First in its flavor's queue, and the flavor has a free slot."""
        flavor = self._catalog.flavors.get(instance.flavor)
        if flavor is None:
            return False
        if flavor.capacity is None:
            return True
        queue = await self._repo.queued(instance.flavor)
        if not queue or queue[0] != instance.id:
            return False
        return await self._repo.count_holding(instance.flavor) < flavor.capacity

    async def _claim(self, instance_id: str) -> bool:
        return await self._leases.claim(
            instance_id, self._owner, now_ms=self._clock.now_ms(), ttl_ms=LEASE_TTL_MS
        )

    async def _drive(self, instance_id: str) -> None:
        launches = 0
        claimed_at = self._clock.now_ms()
        backoff = Backoff(first=0.02, cap=0.1)
        while not self._stopping:
            instance = await self._repo.load(instance_id)
            if instance is None:
                return
            try:
                observed = await self._backend.observe(instance_id, instance.handle)
                step = await self._plan(instance, observed)
                log.debug("%s %s/%s -> %s", instance_id, instance.status, observed.workload, step)
                done = await self._act(instance, observed, step, launches)
            except errors.ConcurrentUpdate:
                continue
            except errors.TransientBackendError as exc:
                log.warning("%s: %s; retrying in %.1fs", instance_id, exc, exc.retry_after)
                await self._clock.sleep(exc.retry_after)
                continue
            except errors.PermanentBackendError as exc:
                await self._fail(instance, FailedReason(exc.code, exc.message))
                return
            if done is True:
                return
            if self._clock.now_ms() - claimed_at > LEASE_TTL_MS // 3:
                if not await self._claim(instance_id):
                    return
                claimed_at = self._clock.now_ms()
            if done == "launched":
                launches += 1
            elif done == "wait":
                await self._clock.sleep(backoff.next())

    async def _act(
        self, instance: Instance, observed: Observation, step: Step, launches: int
    ) -> bool | str:
        now = self._clock.now_ms()
        repo = self._repo
        if step is Step.NOTHING:
            if self._lacks_endpoint(instance, observed):
                # Running since before the endpoint was stored (an upgrade): store it now.
                await repo.save(instance, now_ms=now, endpoint=self._backend.endpoint(
                    instance.id, observed.handle or instance.handle or {}))
            return True
        if step is Step.WAIT:
            started = observed.launched_at or (instance.handle or {}).get("launched_at") or now
            if now - int(started) > self._start_timeout_ms:
                await self._fail(
                    instance,
                    FailedReason(
                        "ModelArts.6361",
                        f"The notebook did not answer within {self._start_timeout_ms // 1000} s.",
                    ),
                )
                return True
            return "wait"
        if step in (Step.LAUNCH, Step.RELAUNCH):
            # A second try covers races such as another process taking the free port.
            if launches >= MAX_LAUNCHES and observed.workload is Workload.ABSENT:
                await self._fail(
                    instance,
                    FailedReason(
                        "ModelArts.6361",
                        "The notebook server exited before it answered.",
                    ),
                )
                return True
            if step is Step.RELAUNCH:
                await self._backend.stop(instance.id, instance.handle)
            try:
                launched_handle = await self._backend.start(self._launch_spec(instance, now))
            except errors.BackendError:
                raise
            except Exception as exc:
                # A backend bug must not retry forever: fail the start, visibly.
                log.exception("%s: the backend failed to start it", instance.id)
                raise errors.PermanentBackendError(f"The backend failed: {exc}") from exc
            await self._keep_launched(instance, launched_handle, now)
            return "launched"
        if step is Step.MARK_RUNNING:
            keep = instance.status is S.UNAVAILABLE and instance.running_since is not None
            running_since = instance.running_since if keep else now
            handle = _without_count(observed.handle or instance.handle)
            await repo.transition(
                instance,
                S.RUNNING,
                now_ms=now,
                failed=volume_overuse(instance, handle),
                handle=handle,
                endpoint=self._backend.endpoint(instance.id, handle) if handle else None,
                running_since=running_since,
                stop_at=instance.stop_at if keep else stop_deadline(instance, self._catalog, now),
            )
            return True
        if step is Step.ADMIT:
            target = S.CREATING if instance.status is S.CREATE_QUEUING else S.READY_TO_START
            await repo.transition(instance, target, now_ms=now)
            return False
        if step is Step.MARK_STARTING:
            await repo.transition(instance, S.STARTING, now_ms=now)
            return False
        if step is Step.COUNT_UNANSWERED:
            count = unanswered(instance) + 1
            log.warning("%s: health probe %d unanswered", instance.id, count)
            await repo.save(
                instance, now_ms=now, handle={**(instance.handle or {}), UNANSWERED_KEY: count}
            )
            return True  # the next sweep probes again
        if step is Step.RESET_UNANSWERED:
            await repo.save(instance, now_ms=now, handle=_without_count(instance.handle))
            return True
        if step is Step.MARK_UNAVAILABLE:
            await repo.transition(
                instance,
                S.UNAVAILABLE,
                now_ms=now,
                failed=self._fault(observed),
                handle=_without_count(instance.handle),
            )
            return False
        if step is Step.AUTO_STOP:
            await repo.transition(
                instance,
                S.STOPPING,
                now_ms=now,
                desired=Desired.STOPPED,
                stop_at=None,
            )
            return False
        if step is Step.HALT:
            await self._backend.stop(instance.id, instance.handle)
            await repo.save(instance, now_ms=now, handle=None)
            return False
        if step is Step.MARK_STOPPED:
            # The stored handle may name an older workload than one a launch left behind
            # (a stop accepted while it booted): stop by instance id before saying STOPPED.
            await self._backend.stop(instance.id, None)
            await repo.transition(
                instance,
                S.STOPPED,
                now_ms=now,
                failed=None,  # a stop is not a failure: §3.9 wants null unless failed
                handle=None,
                stop_at=None,
                running_since=None,
            )
            return True
        if step is Step.DESTROY:
            await self._backend.delete(instance.id, instance.handle, instance.storage)
            await repo.save(instance, now_ms=now, handle=None, cleanup_pending=False)
            return True
        raise AssertionError(f"unhandled step {step}")

    async def _keep_launched(self, instance: Instance, handle: Handle, now: int) -> None:
        """Store the handle of what was just launched, or stop it if it is no longer wanted.

        The row may have changed while the workload booted. If the caller stopped or
        deleted the instance meanwhile, nothing may keep running behind that: stop the
        new workload (its handle is not in the row, so no later pass would find it).
        """
        try:
            await self._repo.save(instance, now_ms=now, handle=dict(handle))
            return
        except errors.ConcurrentUpdate:
            current = await self._repo.load(instance.id)
        if (
            current is not None
            and current.status is instance.status
            and current.desired == instance.desired
        ):
            # Only something else changed (a PUT of the description): keep the workload.
            await self._repo.save(current, now_ms=now, handle=dict(handle))
            return
        await self._backend.stop(instance.id, handle)
        raise errors.ConcurrentUpdate(f"instance {instance.id} changed while it launched")

    def _fault(self, observed: Observation) -> FailedReason:
        """Why a RUNNING instance became UNAVAILABLE.

        The contract has no code of its own for a fault; 6361 (internal service error)
        is the failed_reasons code it names for a notebook that does not work through no
        fault of the caller, and ``detail.cause`` tells the two faults apart.
        """
        if observed.workload is Workload.ABSENT:
            return FailedReason(
                "ModelArts.6361",
                "The notebook server stopped unexpectedly; restarting it.",
                {"cause": "exited"},
            )
        return FailedReason(
            "ModelArts.6361",
            f"The notebook server stopped answering ({self._health_failures} health "
            "checks in a row failed); it is back as soon as it answers again.",
            {"cause": "unresponsive", "failed_probes": str(self._health_failures)},
        )

    def _launch_spec(self, instance: Instance, now: int) -> LaunchSpec:
        profile = self._catalog.profiles.get(instance.profile_id)
        flavor = self._catalog.flavors.get(instance.flavor)
        if profile is None or flavor is None:
            raise errors.PermanentBackendError(
                f"profile {instance.profile_id!r} or flavor {instance.flavor!r} left the catalog"
            )
        return LaunchSpec(
            instance_id=instance.id,
            project_id=instance.project_id,
            profile=profile,
            flavor=flavor,
            storage=instance.storage,
            extend_storage=instance.extend_storage or (),
            now_ms=now,
        )

    async def _fail(self, instance: Instance, reason: FailedReason) -> None:
        """Stop whatever runs and record why the create or start failed."""
        log.warning("%s failed: %s", instance.id, reason.message)
        with contextlib.suppress(errors.BackendError):
            await self._backend.stop(instance.id, instance.handle)
        for _ in range(5):
            current = await self._repo.load(instance.id)
            if current is None or current.status not in (
                S.CREATING,
                S.STARTING,
                S.RESTARTING,
                S.UNAVAILABLE,
            ):
                return
            target = _FAILED_TARGET.get(current.status, S.START_FAILED)
            try:
                await self._repo.transition(
                    current,
                    target,
                    now_ms=self._clock.now_ms(),
                    failed=reason,
                    handle=None,
                    stop_at=None,
                    running_since=None,
                )
                return
            except errors.ConcurrentUpdate:
                continue


def _without_count(handle: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``handle`` without the engine's count of missed health probes."""
    if not handle:
        return None
    return {k: v for k, v in handle.items() if k != UNANSWERED_KEY}
