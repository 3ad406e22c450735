"""A keyed work queue: one worker per key at a time, a global cap across keys.

Asking for a key that is being worked on marks it dirty; the worker runs it once
more when it finishes, so no request is lost and no key runs twice at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class KeyedWorkQueue:
    def __init__(self, work: Callable[[str], Awaitable[None]], concurrency: int) -> None:
        self._work = work
        self._limit = asyncio.Semaphore(concurrency)
        self._active: set[str] = set()
        self._dirty: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, key: str) -> None:
        if key in self._active:
            self._dirty.add(key)
            return
        self._active.add(key)
        task = asyncio.create_task(self._run(key), name=f"reconcile {key}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def busy(self, key: str) -> bool:
        return key in self._active

    async def _run(self, key: str) -> None:
        try:
            while True:
                self._dirty.discard(key)
                async with self._limit:
                    try:
                        await self._work(key)
                    except asyncio.CancelledError:
                        raise
                    except Exception:
                        log.exception("reconciling %s failed; will retry on the next sweep", key)
                if key not in self._dirty:
                    return
        finally:
            self._active.discard(key)

    async def drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def cancel(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
