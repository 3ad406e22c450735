"""The reconciler: load, observe, plan, claim, act, persist, until the instance is at rest.

Level-triggered and idempotent: a periodic sweep (and a wake-up from the API when it
records new intent) submits every instance that may need work to a keyed work queue.
``drive`` then repeats passes of plan-and-act for that instance; each pass observes
the workload once. Nothing held in memory matters for correctness; after a crash the
same loop converges again.

Several replicas may share one database. An instance is driven by the replica that
holds its lease (``store/leases.py``), every write is fenced by that lease, and an
instance whose workload runs on another live node is left to that node's replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import zlib
from collections import defaultdict
from collections.abc import Awaitable, Callable

from demanager import errors
from demanager.backends.base import Backend, Handle
from demanager.backends.node import is_dead_neighbour
from demanager.domain import events
from demanager.domain.catalog import Catalog
from demanager.domain.hostfit import Inventory
from demanager.domain.instance import FailedReason, Instance
from demanager.domain.lifecycle import QUEUED, InstanceStatus
from demanager.domain.planning import (
    DEFAULT_HEALTH_FAILURES,
    DEFAULT_RESERVATION_MS,
    Observation,
    Step,
    Workload,
    plan,
)
from demanager.domain.policy import Judgement, PlannedStop, Policy, judge
from demanager.engine.activity import ActivityProbe
from demanager.engine.backoff import Backoff
from demanager.engine.clock import Clock
from demanager.engine.metrics import Metrics
from demanager.engine.retention import RetentionSweep
from demanager.engine.steps import NODE_KEY, Outcome, Pass, StepRunner
from demanager.engine.webhooks import Webhook
from demanager.engine.workqueue import KeyedWorkQueue
from demanager.store.instances import InstanceRepository
from demanager.store.leases import LeaseRepository

log = logging.getLogger(__name__)

SUBMIT_CHUNK = 100
"""Instances a sweep hands to the work queue between two turns of the event loop."""
PURGE_INTERVAL_MS = 60_000
"""At most this often, the sweep removes old tombstones and silent replicas' rows."""
FORGET_REPLICAS_AFTER = 20
"""Lease periods after which a silent replica's row is removed."""


class Reconciler:
    def __init__(
        self,
        *,
        repository: InstanceRepository,
        leases: LeaseRepository,
        owner: str,
        host_node: str,
        backend: Backend,
        catalog: Catalog,
        clock: Clock,
        start_timeout: float,
        sweep_interval: float,
        concurrency: int,
        lease_seconds: float = 15.0,
        tombstone_retention: float = 7 * 86_400,
        health_failures: int = DEFAULT_HEALTH_FAILURES,
        inventory: Inventory | None = None,
        reservation_seconds: float = DEFAULT_RESERVATION_MS / 1000,
        metrics: Metrics | None = None,
        purge_events: Callable[[], Awaitable[int]] | None = None,
        policy: Policy | None = None,
        activity: ActivityProbe | None = None,
        webhook: Webhook | None = None,
    ) -> None:
        self._repo = repository
        self._policy = policy or Policy()
        self._activity = activity
        self._metrics = metrics or Metrics(backend.name)
        self._purge_events = purge_events
        self._leases = leases
        self._owner = owner
        self._host_node = host_node
        """This server's node (``this_node``): replicas of it share a PID namespace."""
        self._backend = backend
        self._catalog = catalog
        self._clock = clock
        self._health_failures = health_failures
        self._reservation_ms = int(reservation_seconds * 1000)
        self._sweep_interval = sweep_interval
        self._ttl_ms = int(lease_seconds * 1000)
        self._queue = KeyedWorkQueue(self._timed_drive, concurrency, clock.sleep)
        self._metrics.watch_queue(self._queue.pending)
        self._steps = StepRunner(
            repository=repository,
            backend=backend,
            catalog=catalog,
            owner=owner,
            clock=clock,
            start_timeout_ms=int(start_timeout * 1000),
            health_failures=health_failures,
            inventory=inventory,
            metrics=self._metrics,
            webhook=webhook,
        )
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._wakers: set[asyncio.Task[None]] = set()
        self._tombstone_retention_ms = int(tombstone_retention * 1000)
        self._retention = RetentionSweep(
            repository=repository, catalog=catalog, clock=clock, notify=self.notify
        )
        self._next_purge_ms = 0
        self._started_ms = clock.now_ms()
        self._adopted: set[str] = set()
        """Instances found RUNNING from before this start whose adoption was recorded."""
        # Per-instance memory, dropped when the instance is let go. Losing it (a
        # restart) costs at most one extra launch try or a shorter backoff.
        self._snapshots: dict[str, Instance] = {}
        """Rows the sweep read, used by the first pass instead of reading again."""
        self._held: dict[str, int] = {}
        """Instances whose lease this replica holds, and until when (ms)."""
        self._launches: defaultdict[str, int] = defaultdict(int)
        self._backoffs: dict[str, Backoff] = {}
        self._live_nodes: set[str] = set()
        self._peers: list[str] = [owner]
        """Live replicas that see the same workloads as this one (itself included)."""
        self._everyone: list[str] = [owner]
        """Every live replica."""
        """Nodes with a live replica, other than this one's: their workloads are theirs."""

    # --- lifecycle of the reconciler itself -------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="reconciler sweep")

    async def stop(self, grace: float = 5.0) -> None:
        """Let every drive finish the step it is in (so no database call or launch is cut
        in half), for ``grace`` seconds at most, then cancel what is still running, and
        give up our leases. Workloads are left as they are: a notebook keeps running, and
        the next server (or another replica) picks up any transition not yet finished."""
        self._stopping = True
        self._queue.close()
        for waker in list(self._wakers):
            waker.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._queue.drain()), grace)
        await self._queue.cancel()
        await self._leases.leave(self._owner)

    async def close_policy(self) -> None:
        """Deliver the warnings under way and close the policy's connections."""
        if self._activity is not None:
            await self._activity.close()
        if self._steps.webhook is not None:
            await self._steps.webhook.close()

    def notify(self, instance_id: str) -> None:
        """The API recorded new intent for ``instance_id``: act on it now."""
        self._snapshots.pop(instance_id, None)
        self._queue.submit(instance_id, urgent=True)

    def queue_depth(self) -> int:
        return self._queue.pending()

    async def sweep(self) -> None:
        """Say this replica is alive, then submit every instance that may need work (one
        query, no writes for instances at rest)."""
        await self._heartbeat()
        now = self._clock.now_ms()
        found = await self._repo.needing_attention(free_for=self._owner, now_ms=now)
        for n, instance in enumerate(found):
            if n and not n % SUBMIT_CHUNK:
                await asyncio.sleep(0)  # requests waiting meanwhile go first
            if not self._queue.busy(instance.id) and self._my_share(instance):
                self._snapshots[instance.id] = instance
                self._queue.submit(instance.id)
        await self._purge()
        await self._retention.run()
        if self._purge_events is not None:
            await self._purge_events()

    async def settle(self) -> None:
        """Run one sweep and wait for all work it started (tests and benchmarks)."""
        await self.sweep()
        await self._queue.drain()

    async def _heartbeat(self) -> None:
        now = self._clock.now_ms()
        await self._leases.heartbeat(self._owner, self._backend.node or "", now_ms=now)
        replicas = await self._leases.replicas(now_ms=now, ttl_ms=self._ttl_ms)
        mine = self._backend.node
        self._live_nodes = {node for node in replicas.values() if node and node != mine}
        self._everyone = sorted(replicas) or [self._owner]
        self._peers = sorted(
            owner for owner, node in replicas.items() if node == (mine or "")
        ) or [self._owner]

    def _my_share(self, instance: Instance) -> bool:
        """Whether this replica's sweep looks at ``instance``.

        The replicas that can see a workload split the sweep's instances among
        themselves by a hash of the id, so each is observed (health-checked, auto-stopped)
        by one of them instead of all, and they do not all race to claim the same rows.
        The split is a matter of work, not of safety (leases and fencing are): a share
        whose replica died is redistributed once its heartbeat is a lease old. New intent
        from the API is acted on by the replica that records it, whatever its share.
        """
        node = (instance.handle or {}).get(NODE_KEY)
        if node is not None and node != self._backend.node:
            # Another live node's: its replicas look at it. A node gone silent: every
            # replica may take it over.
            return node not in self._live_nodes
        # A workload of this node is split among its replicas; an instance with none
        # running (a new one, a stopped one) may be launched by any replica.
        sharing = self._peers if node is not None else self._everyone
        if self._owner not in sharing:
            return True
        return sharing[zlib.crc32(instance.id.encode()) % len(sharing)] == self._owner

    async def _purge(self) -> None:
        """Deleted rows are kept a while (listable as DELETED), then removed; so are the
        rows of replicas long gone. At most once a minute, one DELETE each."""
        now = self._clock.now_ms()
        if now < self._next_purge_ms:
            return
        self._next_purge_ms = now + PURGE_INTERVAL_MS
        await self._repo.purge_tombstones(deleted_before_ms=now - self._tombstone_retention_ms)
        silent_since = now - FORGET_REPLICAS_AFTER * self._ttl_ms
        await self._leases.forget_replicas(seen_before_ms=silent_since)

    async def _reclaim_from_dead_neighbours(self) -> None:
        """Free the leases and rows of replicas of this node whose process is gone, so a
        restarted server need not wait for its predecessor's leases to run out.

        Only a replica of this node (same PID namespace) is judged, by PID and the PID's
        start tick: a host name alone would let two containers that share one release a
        live peer's leases.
        """
        now = self._clock.now_ms()
        known = await self._leases.replicas(now_ms=now, ttl_ms=now)
        for owner in set(await self._leases.owners()) | set(known):
            if owner != self._owner and is_dead_neighbour(owner, self._host_node):
                log.info("releasing the leases of %s, which is gone", owner)
                await self._leases.leave(owner)

    async def _loop(self) -> None:
        with contextlib.suppress(Exception):
            await self._reclaim_from_dead_neighbours()
        while True:
            began = time.perf_counter()
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("sweep failed; retrying")
            self._metrics.sweep_duration.observe(time.perf_counter() - began)
            await asyncio.sleep(self._sweep_interval)

    # --- one instance -----------------------------------------------------------------

    async def _timed_drive(self, instance_id: str) -> None:
        # Wall time, not the injected clock: this measures the server, not the schedule.
        began = time.perf_counter()
        try:
            await self.drive(instance_id)
        finally:
            self._metrics.reconcile_duration.observe(time.perf_counter() - began)

    async def drive(self, instance_id: str) -> None:
        """Passes of observe, plan, claim, act, until the instance is at rest, waits, or
        is another replica's.

        Most passes find nothing to do (a healthy RUNNING instance): that is decided by
        reading alone, so steady state costs no writes, not even a claim.
        """
        instance = self._snapshots.pop(instance_id, None)
        # Act only on what was read and observed while holding the lease: between a look
        # without it and the claim, another replica may have acted (launched, even).
        leased = instance is None and self._held.get(instance_id, 0) > self._clock.now_ms()
        if instance is None:
            instance = await self._repo.load(instance_id)
        while not self._stopping:
            if instance is None or not self._ours(instance):
                await self._let_go(instance_id)
                return
            planned = await self._observe_and_plan(instance)
            if planned is None:
                return
            observed, step, stop = planned
            if step is Step.NOTHING and not self._steps.stale_endpoint(instance, observed):
                await self._note_adopted(instance, observed)
                await self._let_go(instance_id)
                return
            if not await self._hold(instance_id):
                self._forget(instance_id)
                return
            if not leased:
                leased = True
                instance = await self._repo.load(instance_id)
                continue
            outcome = await self._act(instance, observed, step, stop)
            if outcome is None:
                return
            if outcome is Outcome.DONE:
                await self._let_go(instance_id)
                return
            if outcome is Outcome.WAIT:
                backoff = self._backoffs.setdefault(instance_id, Backoff(first=0.05, cap=0.25))
                self._queue.submit_after(instance_id, backoff.next())
                return
            if outcome is Outcome.LAUNCHED:
                self._launches[instance_id] += 1
            instance = await self._repo.load(instance_id)

    async def _note_adopted(self, instance: Instance, observed: Observation[Handle]) -> None:
        """Record once that this server found a workload running from before its start
        and goes on driving it (the event log's ``adopted``)."""
        if (
            instance.status is not InstanceStatus.RUNNING
            or observed.workload is not Workload.READY
            or instance.updated_at >= self._started_ms
            or instance.id in self._adopted
        ):
            return
        self._adopted.add(instance.id)
        await self._repo.record(instance, events.adopted(), now_ms=self._clock.now_ms())

    async def _observe_and_plan(
        self, instance: Instance
    ) -> tuple[Observation[Handle], Step, PlannedStop | None] | None:
        """Observe the workload once and plan; None when the backend cannot tell now (it
        is asked again later) or cannot ever (the start fails)."""
        try:
            observed = await self._backend.observe(instance.id, self._steps.typed(instance.handle))
        except errors.TransientBackendError as exc:
            log.warning("%s: %s; observing again in %.1fs", instance.id, exc, exc.retry_after)
            self._queue.submit_after(instance.id, exc.retry_after)
            return None
        except errors.PermanentBackendError as exc:
            if await self._hold(instance.id):
                await self._steps.fail(instance, FailedReason(exc.code, str(exc)))
                await self._let_go(instance.id)
            return None
        admissible = instance.status in QUEUED and await self._admissible(instance)
        now = self._clock.now_ms()
        judgement = await self._judge(instance, observed, now)
        step = plan(
            instance,
            observed,
            now,
            admissible=admissible,
            health_failures=self._health_failures,
            reservation_ms=self._reservation_ms,
            judgement=judgement,
        )
        log.debug("%s %s/%s -> %s", instance.id, instance.status, observed.workload, step)
        return observed, step, judgement.stop if judgement is not None else None

    async def _judge(
        self, instance: Instance, observed: Observation[Handle], now_ms: int
    ) -> Judgement | None:
        """The lifecycle policy's verdict on a RUNNING instance, reading its notebook's
        activity first when idleness is judged and the last reading is old."""
        if instance.status is not InstanceStatus.RUNNING:
            if self._activity is not None:
                self._activity.forget(instance.id)
            return None
        activity = None
        endpoint = observed.endpoint or instance.endpoint
        if (
            self._policy.judges_idle
            and self._activity is not None
            and observed.workload is Workload.READY
            and endpoint is not None
        ):
            activity = await self._activity.read(instance.id, endpoint, now_ms)
        return judge(instance, self._policy, activity, now_ms)

    async def _act(
        self,
        instance: Instance,
        observed: Observation[Handle],
        step: Step,
        stop: PlannedStop | None = None,
    ) -> Outcome | None:
        """Run one step under the lease (renewed while it runs); None: stop driving."""
        now = self._clock.now_ms()
        current = Pass(instance, observed, now, self._launches[instance.id], stop)
        try:
            async with self._leases.kept(
                instance.id, self._owner, now_ms=self._clock.now_ms, ttl_ms=self._ttl_ms
            ):
                return await self._steps.run(step, current)
        except errors.ConcurrentUpdate:
            return Outcome.AGAIN
        except errors.LeaseLost:
            log.warning("%s: another replica took it over; letting go", instance.id)
            self._forget(instance.id)
            return None
        except errors.TransientBackendError as exc:
            log.warning("%s: %s; retrying in %.1fs", instance.id, exc, exc.retry_after)
            self._queue.submit_after(instance.id, exc.retry_after)
            return None
        except errors.PermanentBackendError as exc:
            await self._steps.fail(instance, FailedReason(exc.code, str(exc)))
            return Outcome.DONE

    def _ours(self, instance: Instance) -> bool:
        """False when the instance's workload runs on another node that has a live
        replica: only that node can see it, so this replica must neither relaunch it
        (it would look absent from here) nor stop it. It hands the instance over by
        leaving it alone; that node's sweep picks it up."""
        node = (instance.handle or {}).get(NODE_KEY)
        return node is None or node == self._backend.node or node not in self._live_nodes

    async def _admissible(self, instance: Instance) -> bool:
        """First in its flavor's queue in its pool, and a slot there looks free. Only a
        look: the admission's status write takes the slot atomically, or does not happen
        (another instance got it) and is tried again later. Frozen instances are passed
        over: they may not start, and must not hold up those behind them."""
        if instance.flavor not in self._catalog.flavors or instance.frozen:
            return False
        limit = self._catalog.capacity_of(instance.pool_id, instance.flavor)
        if limit is None:
            return True
        queue = await self._repo.queued(instance.flavor, instance.pool_id, startable=True)
        if not queue or queue[0] != instance.id:
            return False
        return await self._repo.slots_used(instance.pool_id, instance.flavor) < limit

    def slot_freed(self, pool_id: str | None, flavor: str) -> None:
        """An instance of ``flavor`` gave its slot in the pool back: wake the head of that
        queue now rather than at the next sweep. Other replicas learn of it by their sweep."""
        found = self._catalog.flavors.get(flavor)
        if self._stopping or found is None or not found.free:
            return  # only free flavors queue
        task = asyncio.create_task(self._wake_queue_head(pool_id, flavor))
        self._wakers.add(task)
        task.add_done_callback(self._wakers.discard)

    async def _wake_queue_head(self, pool_id: str | None, flavor: str) -> None:
        try:
            queue = await self._repo.queued(flavor, pool_id, startable=True)
        except Exception:  # the sweep will find it
            log.exception("reading the queue of %s failed", flavor)
            return
        if queue and not self._stopping:
            self.notify(queue[0])

    async def _hold(self, instance_id: str) -> bool:
        """Claim the instance, or renew the claim when a third of it has passed (a claim
        is a write: a booting instance checked every quarter second renews it rarely)."""
        now = self._clock.now_ms()
        if self._held.get(instance_id, 0) - now > self._ttl_ms * 2 // 3:
            return True
        if not await self._leases.claim(instance_id, self._owner, now_ms=now, ttl_ms=self._ttl_ms):
            return False
        self._held[instance_id] = now + self._ttl_ms
        return True

    async def _let_go(self, instance_id: str) -> None:
        if instance_id in self._held:
            await self._leases.release(instance_id, self._owner)
        self._forget(instance_id)

    def _forget(self, instance_id: str) -> None:
        self._held.pop(instance_id, None)
        self._launches.pop(instance_id, None)
        self._backoffs.pop(instance_id, None)
