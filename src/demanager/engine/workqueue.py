"""A keyed work queue: one worker per key at a time, a cap across keys, and timers.

Asking for a key that is being worked on marks it dirty; the worker runs it once
more when it finishes, so no request is lost and no key runs twice at once.

Two lanes share the work function, each with its own cap: *urgent* work (new intent
from the API: a stop, a delete) never waits behind *routine* work (the sweep's
checks, re-checks of booting instances), however much of that there is.

``submit_after`` is how work waits without holding a worker: the key is run again
after a delay, on a timer, and the slot is free meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class KeyedWorkQueue:
    def __init__(
        self,
        work: Callable[[str], Awaitable[None]],
        concurrency: int,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._work = work
        self._sleep = sleep
        self._routine = asyncio.Semaphore(concurrency)
        self._urgent = asyncio.Semaphore(concurrency)
        self._active: set[str] = set()
        self._dirty: dict[str, bool] = {}
        """Keys asked for again while they ran, and whether any of those asks was urgent."""
        self._timers: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    def submit(self, key: str, *, urgent: bool = False) -> None:
        if self._closed:
            return  # shutting down: the intent is in the store, the next start acts on it
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()  # it is run now; its timer would only run it once more
        if key in self._active:
            self._dirty[key] = self._dirty.get(key, False) or urgent
            return
        self._active.add(key)
        self._track(asyncio.create_task(self._run(key, urgent), name=f"reconcile {key}"))

    def submit_after(self, key: str, delay: float) -> None:
        """Run ``key`` again (routine) after ``delay`` seconds, unless asked for sooner."""
        if key in self._timers or self._closed:
            return
        self._timers[key] = self._track(
            asyncio.create_task(self._later(key, delay), name=f"timer {key}")
        )

    def busy(self, key: str) -> bool:
        """Running, or due to run on a timer: a sweep need not ask for it."""
        return key in self._active or key in self._timers

    def pending(self) -> int:
        """Keys running or waiting on a timer (the engine's queue depth)."""
        return len(self._active | self._timers.keys())

    def _track(self, task: asyncio.Task[None]) -> asyncio.Task[None]:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _later(self, key: str, delay: float) -> None:
        try:
            await self._sleep(delay)
        finally:
            if self._timers.get(key) is asyncio.current_task():
                del self._timers[key]
        self.submit(key)

    async def _run(self, key: str, urgent: bool) -> None:
        try:
            while True:
                self._dirty.pop(key, None)
                async with self._urgent if urgent else self._routine:
                    try:
                        await self._work(key)
                    except asyncio.CancelledError:
                        raise
                    except Exception:
                        log.exception("reconciling %s failed; will retry on the next sweep", key)
                if key not in self._dirty:
                    return
                urgent = self._dirty[key]
        finally:
            self._active.discard(key)

    def close(self) -> None:
        """Take no more work and drop the timers (they hold no work in progress), so that
        ``drain`` waits only for the steps running now."""
        self._closed = True
        self._dirty.clear()
        for timer in list(self._timers.values()):
            timer.cancel()
        self._timers.clear()

    async def drain(self) -> None:
        """Wait until no work runs and no timer is due (tests and benchmarks)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def cancel(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
        self._timers.clear()
