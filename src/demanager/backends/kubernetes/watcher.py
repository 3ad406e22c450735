"""One watch of the deployment's pods, shared by every instance: a cache by instance id.

The engine observes every instance at each sweep. Asking the API server about each
pod each time would cost one request per instance per sweep; instead one task lists
the deployment's pods once (label selector ``managed-by`` + ``deployment``), then
watches from the list's resourceVersion and applies each ADDED, MODIFIED and
DELETED event to the cache. ``observe`` reads the cache.

* When the stream ends (the server's watch timeout), lightkube watches again from
  the last resourceVersion seen, as client-go's reflector does.
* 410 Gone (the version is older than the server's history) re-lists at once.
* Any other error marks the cache unsynced, and the task re-lists after a jittered
  exponential backoff; while it is unsynced, the backend reads the API server
  directly instead of trusting the cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Mapping
from typing import Any

import httpx2
from lightkube import ApiError, AsyncClient
from lightkube.resources.core_v1 import Pod

from demanager.backends.kubernetes.manifests import INSTANCE

log = logging.getLogger(__name__)

WATCH_SECONDS = 300
"""The server closes each watch request after this long; lightkube then resumes it."""
BACKOFF_FIRST = 0.5
BACKOFF_CAP = 30.0


def is_gone(exc: BaseException) -> bool:
    """410 Gone: the resourceVersion asked for has left the server's history. It comes
    as an ERROR event in the stream (the watch cache) or as the response's status."""
    if isinstance(exc, ApiError):
        return exc.status.code == 410
    return isinstance(exc, httpx2.HTTPStatusError) and exc.response.status_code == 410


class PodWatch:
    def __init__(self, client: AsyncClient, namespace: str, labels: Mapping[str, str]) -> None:
        self._client = client
        self._namespace = namespace
        self._labels: dict[str, Any] = dict(labels)
        self._pods: dict[str, Pod] = {}
        self._synced = asyncio.Event()
        self._changed = asyncio.Event()
        """Set, and replaced by a fresh one, whenever the cache changes."""
        self._task: asyncio.Task[None] | None = None
        self._started = 0.0
        self.relists = 0
        """How many times the pods were listed (the first time included)."""

    @property
    def synced(self) -> bool:
        """The cache follows the server: listed, and watching without error since."""
        return self._synced.is_set()

    def start(self) -> None:
        """Start watching (once; it needs a running event loop)."""
        if self._task is None:
            self._started = asyncio.get_running_loop().time()
            self._task = asyncio.create_task(self._run(), name="kubernetes-pod-watch")

    async def first_sync(self, seconds: float) -> bool:
        """Start watching if need be, and give the first listing up to ``seconds`` from
        the start to arrive; true if the cache is synced. Once that time has passed, it
        waits no more: an API server that is down must not slow every observation."""
        self.start()
        left = self._started + seconds - asyncio.get_running_loop().time()
        if not self.synced and left > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._synced.wait(), left)
        return self.synced

    async def until_absent(self, instance_label: str, seconds: float) -> bool:
        """Wait, at most ``seconds``, until a synced cache holds no pod for the instance;
        true if it then holds none (an unsynced cache is not waited for)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while self.synced and instance_label in self._pods:
            left = deadline - loop.time()
            if left <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)
        return True

    def get(self, instance_label: str) -> Pod | None:
        """The cached pod labelled with ``instance_label`` (``manifests.label_value``)."""
        return self._pods.get(instance_label)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._synced.clear()

    # --- the task ---------------------------------------------------------------------

    async def _run(self) -> None:
        delay = BACKOFF_FIRST
        while True:
            try:
                version = await self._relist()
                delay = BACKOFF_FIRST
                async for kind, pod in self._client.watch(
                    Pod,
                    namespace=self._namespace,
                    labels=self._labels,
                    resource_version=version,
                    server_timeout=WATCH_SECONDS,
                ):
                    self._apply(kind, pod)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if is_gone(exc):
                    log.info("the pod watch's resourceVersion expired; listing again")
                    continue
                self._synced.clear()
                pause = delay * random.uniform(0.8, 1.2)
                log.warning("watching pods failed (%s); listing again in %.1fs", exc, pause)
                await asyncio.sleep(pause)
                delay = min(delay * 2, BACKOFF_CAP)

    async def _relist(self) -> str:
        listing = self._client.list(Pod, namespace=self._namespace, labels=self._labels)
        pods: dict[str, Pod] = {}
        async for pod in listing:
            key = _instance_of(pod)
            if key is not None:
                pods[key] = pod
        self._pods = pods
        self.relists += 1
        self._synced.set()
        self._pulse()
        return listing.resourceVersion

    def _apply(self, kind: str, pod: Pod) -> None:
        key = _instance_of(pod)
        if key is None:
            return
        if kind == "DELETED":
            cached = self._pods.get(key)
            if cached is not None and _uid(cached) == _uid(pod):
                del self._pods[key]
        elif kind in ("ADDED", "MODIFIED"):
            self._pods[key] = pod
        self._pulse()

    def _pulse(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()


def _instance_of(pod: Pod) -> str | None:
    labels = pod.metadata.labels if pod.metadata is not None else None
    return (labels or {}).get(INSTANCE)


def _uid(pod: Pod) -> str | None:
    return pod.metadata.uid if pod.metadata is not None else None
