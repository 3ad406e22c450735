"""What the engine does for each planned step, one handler per ``Step``.

The reconciler plans (``domain/planning.py``), claims the instance, then calls
``StepRunner.run``, which looks the step up in a dispatch table. Each handler
performs one step and answers with an ``Outcome`` that tells the reconciler what
to do next. Every write is fenced by the reconciler's lease (``fence=owner``): a
replica that lost the instance cannot write to it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from pydantic import ValidationError

from demanager import errors
from demanager.backends.base import Backend, Handle, LaunchSpec
from demanager.domain import events
from demanager.domain.catalog import Catalog
from demanager.domain.hostfit import Inventory
from demanager.domain.instance import Desired, FailedReason, Instance
from demanager.domain.lifecycle import InstanceStatus as S
from demanager.domain.planning import UNANSWERED_KEY, Observation, Step, Workload, unanswered
from demanager.domain.policy import PlannedStop
from demanager.engine.clock import Clock
from demanager.engine.metrics import Metrics
from demanager.engine.run_terms import stop_deadline, volume_overuse
from demanager.engine.webhooks import Webhook
from demanager.store.instances import InstanceRepository

log = logging.getLogger(__name__)

NODE_KEY = "node"
"""Key in a stored handle naming the node its workload runs on (``Backend.node``)."""

MAX_LAUNCHES = 2
"""Launches in a row, without the workload answering, before the start fails: a second
try covers races such as another process taking the free port."""

_FAILED_TARGET = {S.CREATING: S.CREATE_FAILED}


class Outcome(Enum):
    """What the reconciler does after a step."""

    DONE = "done"
    """Nothing more to do now: let go of the instance (release its lease)."""
    AGAIN = "again"
    """The row changed: reload, observe and plan again at once."""
    WAIT = "wait"
    """Something is in progress (a workload boots): come back after a delay, keeping
    the lease but not a worker."""
    LAUNCHED = "launched"
    """A workload was launched: count it, then plan again at once."""


@dataclass(frozen=True)
class Pass:
    """One round of plan-and-act: what was read, what was seen, and when."""

    instance: Instance
    observed: Observation[Handle]
    now_ms: int
    launches: int
    """Workloads launched for the instance since it was last at rest."""
    stop: PlannedStop | None = None
    """The run's next stop, as the lifecycle policy judged it for this pass."""


Handler = Callable[[Pass], Awaitable[Outcome]]


class StepRunner:
    def __init__(
        self,
        *,
        repository: InstanceRepository,
        backend: Backend,
        catalog: Catalog,
        owner: str,
        clock: Clock,
        start_timeout_ms: int,
        health_failures: int,
        inventory: Inventory | None = None,
        metrics: Metrics | None = None,
        webhook: Webhook | None = None,
    ) -> None:
        self._repo = repository
        self.webhook = webhook
        self._inventory = inventory
        self._metrics = metrics or Metrics(backend.name)
        self._backend = backend
        self._catalog = catalog
        self._owner = owner
        self._clock = clock
        self._start_timeout_ms = start_timeout_ms
        self._health_failures = health_failures
        self.table: dict[Step, Handler] = {
            Step.NOTHING: self._store_endpoint,
            Step.WAIT: self._wait,
            Step.LAUNCH: self._launch,
            Step.RELAUNCH: self._launch,
            Step.MARK_RUNNING: self._mark_running,
            Step.FAIL: self._fail_launch,
            Step.WARN: self._warn,
            Step.ADMIT: self._admit,
            Step.MARK_STARTING: self._mark_starting,
            Step.LAPSE: self._lapse,
            Step.COUNT_UNANSWERED: self._count_unanswered,
            Step.RESET_UNANSWERED: self._reset_unanswered,
            Step.MARK_UNAVAILABLE: self._mark_unavailable,
            Step.AUTO_STOP: self._auto_stop,
            Step.POLICY_STOP: self._policy_stop,
            Step.WARN_STOP: self._warn_stop,
            Step.HALT: self._halt,
            Step.MARK_STOPPED: self._mark_stopped,
            Step.DESTROY: self._destroy,
        }

    async def run(self, step: Step, current: Pass) -> Outcome:
        return await self.table[step](current)

    # --- writes, all fenced ---------------------------------------------------------------

    async def _save(self, instance: Instance, now_ms: int, **changes: Any) -> Instance:
        return await self._repo.save(instance, now_ms=now_ms, fence=self._owner, **changes)

    async def _transition(
        self, instance: Instance, target: S, now_ms: int, **changes: Any
    ) -> Instance:
        return await self._repo.transition(
            instance, target, now_ms=now_ms, fence=self._owner, **changes
        )

    def stamped(self, handle: Handle | None) -> dict[str, Any] | None:
        """The stored form of the backend's ``handle``: its fields, plus the node its
        workload runs on."""
        if handle is None:
            return None
        return self.restamped(handle.model_dump(mode="json"))

    def restamped(self, stored: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """A stored handle with this backend's node, and without the engine's count of
        missed probes."""
        if not stored:
            return None
        clean = {k: v for k, v in stored.items() if k != UNANSWERED_KEY}
        if self._backend.node is not None:
            clean[NODE_KEY] = self._backend.node
        return clean

    def typed(self, stored: Mapping[str, Any] | None) -> Handle | None:
        """The backend's own handle from the stored one; None when there is none, or when
        it no longer parses (a handle of an older release): the backend then looks the
        workload up by instance id, as after a crash before the handle was stored."""
        if not stored:
            return None
        try:
            return self._backend.handle_type.model_validate(stored)
        except ValidationError as exc:
            log.warning("stored handle does not parse as %s: %s",
                        self._backend.handle_type.__name__, exc.errors()[:1])
            return None

    # --- the handlers -----------------------------------------------------------------

    async def _store_endpoint(self, p: Pass) -> Outcome:
        """NOTHING, except that a RUNNING workload whose endpoint moved (or was never
        stored: an upgrade) gets the one the backend sees now."""
        if self.stale_endpoint(p.instance, p.observed):
            await self._save(p.instance, p.now_ms, endpoint=p.observed.endpoint)
        return Outcome.DONE

    @staticmethod
    def stale_endpoint(instance: Instance, observed: Observation[Handle]) -> bool:
        """RUNNING and READY, but the stored endpoint is not where the workload answers."""
        return (
            instance.status is S.RUNNING
            and observed.workload is Workload.READY
            and observed.endpoint is not None
            and observed.endpoint != instance.endpoint
        )

    async def _wait(self, p: Pass) -> Outcome:
        stored = self.typed(p.instance.handle)
        started = p.observed.launched_at or (stored.launched_at if stored else None)
        if started is not None and p.now_ms - int(started) > self._start_timeout_ms:
            await self.fail(
                p.instance,
                FailedReason(
                    "ModelArts.6361",
                    f"The notebook did not answer within {self._start_timeout_ms // 1000} s.",
                ),
            )
            return Outcome.DONE
        return Outcome.WAIT

    async def _launch(self, p: Pass) -> Outcome:
        instance = p.instance
        if p.launches >= MAX_LAUNCHES and p.observed.workload is Workload.ABSENT:
            await self.fail(
                instance,
                FailedReason("ModelArts.6361", "The notebook server exited before it answered."),
            )
            return Outcome.DONE
        if p.observed.workload is not Workload.ABSENT:  # RELAUNCH: a stale workload runs
            await self._backend.stop(instance.id, self.typed(instance.handle))
        try:
            launched = await self._backend.start(self._launch_spec(instance, p.now_ms))
        except errors.BackendError:
            raise
        except Exception as exc:
            # A backend bug must not retry forever: fail the start, visibly.
            log.exception("%s: the backend failed to start it", instance.id)
            raise errors.PermanentBackendError(f"The backend failed: {exc}") from exc
        await self._keep_launched(instance, launched, p.now_ms, p.launches + 1)
        return Outcome.LAUNCHED

    async def _fail_launch(self, p: Pass) -> Outcome:
        if p.observed.failure is not None:
            await self.fail(p.instance, p.observed.failure)
        return Outcome.DONE

    async def _keep_launched(
        self, instance: Instance, handle: Handle, now: int, attempt: int
    ) -> None:
        """Store the handle of what was just launched, or stop it if it is no longer wanted.

        The row may have changed while the workload booted. If the caller stopped or
        deleted the instance meanwhile, nothing may keep running behind that: stop the
        new workload (its handle is not in the row, so no later pass would find it).
        """
        event = events.launched(attempt)
        try:
            await self._save(instance, now, handle=self.stamped(handle), event=event)
            return
        except errors.ConcurrentUpdate:
            current = await self._repo.load(instance.id)
        if (
            current is not None
            and current.status is instance.status
            and current.desired == instance.desired
        ):
            # Only something else changed (a PUT of the description): keep the workload.
            await self._save(current, now, handle=self.stamped(handle), event=event)
            return
        await self._backend.stop(instance.id, handle)
        raise errors.ConcurrentUpdate(f"instance {instance.id} changed while it launched")

    async def _mark_running(self, p: Pass) -> Outcome:
        instance = p.instance
        keep = instance.status is S.UNAVAILABLE and instance.running_since is not None
        adopted = p.observed.handle
        handle = self.stamped(adopted) if adopted else self.restamped(instance.handle)
        await self._transition(
            instance,
            S.RUNNING,
            p.now_ms,
            failed=p.observed.warning or volume_overuse(instance, p.observed.volume_bytes),
            handle=handle,
            endpoint=p.observed.endpoint,
            running_since=instance.running_since if keep else p.now_ms,
            stop_at=instance.stop_at if keep else stop_deadline(instance, self._catalog, p.now_ms),
            # A new run starts without extensions or warnings; a recovered one keeps its.
            extended_ms=instance.extended_ms if keep else 0,
            warned_for=instance.warned_for if keep else None,
        )
        if not keep:
            self._observe_start(instance, p)
        return Outcome.DONE

    def _observe_start(self, instance: Instance, p: Pass) -> None:
        """The start's duration, from its workload's launch to now; a workload adopted
        without a launch time (or a recovery from UNAVAILABLE) is not a start."""
        stored = self.typed(instance.handle)
        launched = p.observed.launched_at or (stored.launched_at if stored else None)
        if launched is not None:
            self._metrics.observe_start(instance.flavor, (p.now_ms - int(launched)) / 1000)

    async def _warn(self, p: Pass) -> Outcome:
        log.info("%s: %s", p.instance.id, p.observed.warning)
        await self._save(p.instance, p.now_ms, failed=p.observed.warning)
        return Outcome.DONE

    async def _admit(self, p: Pass) -> Outcome:
        """Take a slot with the move out of the queue, and note when (the reservation,
        ``resource_reserved_timestamp``); when another instance took the last one
        first, stay queued (the next sweep or freed slot tries again)."""
        target = S.CREATING if p.instance.status is S.CREATE_QUEUING else S.READY_TO_START
        try:
            await self._transition(p.instance, target, p.now_ms, reserved_at=p.now_ms)
        except errors.NotEnoughResources:
            return Outcome.DONE
        return Outcome.AGAIN

    async def _mark_starting(self, p: Pass) -> Outcome:
        await self._transition(p.instance, S.STARTING, p.now_ms)
        return Outcome.AGAIN

    async def _lapse(self, p: Pass) -> Outcome:
        """Give an unusable or unused reservation back: the instance stops (it may be
        started or queued again), and the slot's release wakes the next in line."""
        log.warning("%s: its reservation lapsed (%s); the slot goes to the next in line",
                    p.instance.id, "frozen" if p.instance.frozen else "not used in time")
        await self._transition(
            p.instance, S.STOPPED, p.now_ms, desired=Desired.STOPPED, actor=events.RESERVATION
        )
        return Outcome.DONE

    async def _count_unanswered(self, p: Pass) -> Outcome:
        count = unanswered(p.instance) + 1
        log.warning("%s: health probe %d unanswered", p.instance.id, count)
        handle = {**(p.instance.handle or {}), UNANSWERED_KEY: count}
        await self._save(p.instance, p.now_ms, handle=handle)
        return Outcome.DONE  # the next sweep probes again

    async def _reset_unanswered(self, p: Pass) -> Outcome:
        await self._save(p.instance, p.now_ms, handle=self.restamped(p.instance.handle))
        return Outcome.DONE

    async def _mark_unavailable(self, p: Pass) -> Outcome:
        await self._transition(
            p.instance,
            S.UNAVAILABLE,
            p.now_ms,
            failed=self._fault(p.observed),
            handle=self.restamped(p.instance.handle),
        )
        return Outcome.AGAIN

    async def _auto_stop(self, p: Pass) -> Outcome:
        await self._transition(
            p.instance, S.STOPPING, p.now_ms, desired=Desired.STOPPED, stop_at=None,
            actor=events.AUTO_STOP,
        )
        self._metrics.policy_actions.labels("stop", "auto_stop").inc()
        return Outcome.AGAIN

    async def _policy_stop(self, p: Pass) -> Outcome:
        assert p.stop is not None
        log.info("%s: stopping: %s", p.instance.id, p.stop.why)
        await self._transition(
            p.instance, S.STOPPING, p.now_ms, desired=Desired.STOPPED, stop_at=None,
            event=events.policy_stop(p.stop),
        )
        self._metrics.policy_actions.labels("stop", p.stop.reason.value).inc()
        return Outcome.AGAIN

    async def _warn_stop(self, p: Pass) -> Outcome:
        """Announce the next stop once: the event, and the webhook when there is one."""
        assert p.stop is not None
        draft = events.stop_warning(p.stop, p.now_ms)
        await self._save(
            p.instance, p.now_ms, warned_for=p.stop.at_ms, event=draft, touch=False
        )
        self._metrics.policy_actions.labels("warn", p.stop.reason.value).inc()
        if self.webhook is not None:
            self.webhook.post({
                "kind": draft.kind.value,
                "instance_id": p.instance.id,
                "instance_name": p.instance.name,
                "project_id": p.instance.project_id,
                "user_id": p.instance.user_id,
                "user_name": p.instance.user_name,
                "at": p.now_ms,
                "stop_at": p.stop.at_ms,
                "reason": p.stop.reason.value,
                "message": draft.message,
            })
        return Outcome.AGAIN

    async def _halt(self, p: Pass) -> Outcome:
        await self._backend.stop(p.instance.id, self.typed(p.instance.handle))
        await self._save(p.instance, p.now_ms, handle=None)
        return Outcome.AGAIN

    async def _mark_stopped(self, p: Pass) -> Outcome:
        # The stored handle may name an older workload than one a launch left behind
        # (a stop accepted while it booted): stop by instance id before saying STOPPED.
        await self._backend.stop(p.instance.id, None)
        await self._transition(
            p.instance,
            S.STOPPED,
            p.now_ms,
            failed=None,  # a stop is not a failure: §3.9 wants null unless failed
            handle=None,
            stop_at=None,
            running_since=None,
        )
        return Outcome.DONE

    async def _destroy(self, p: Pass) -> Outcome:
        instance = p.instance
        await self._backend.delete(instance.id, self.typed(instance.handle), instance.storage)
        await self._save(instance, p.now_ms, handle=None, cleanup_pending=False)
        return Outcome.DONE

    # --- helpers ----------------------------------------------------------------------

    def _fault(self, observed: Observation[Handle]) -> FailedReason:
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
            generation=instance.requested_at or instance.created_at,
            pool_id=instance.pool_id,
            gpus=(instance.gpus or ()) if self._inventory and self._inventory.assigns_gpus
            else None,
        )

    async def fail(self, instance: Instance, reason: FailedReason) -> None:
        """Stop whatever runs and record why the create or start failed."""
        log.warning("%s failed: %s", instance.id, reason.message)
        with contextlib.suppress(errors.BackendError):
            await self._backend.stop(instance.id, self.typed(instance.handle))
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
                await self._transition(
                    current,
                    target,
                    self._clock.now_ms(),
                    failed=reason,
                    handle=None,
                    stop_at=None,
                    running_since=None,
                )
                return
            except errors.ConcurrentUpdate:
                continue

