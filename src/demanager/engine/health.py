"""Readiness: whether this server can do its work now (``/readyz``).

Three checks, each bounded by a short timeout so that a probe answers in
milliseconds when all is well and in about a second when something hangs:

* the database answers ``SELECT 1``;
* its schema is at the revision this release's migrations end at (a database behind,
  or migrated ahead by a newer release, is not one this code may use);
* the backend answers a read: it observes a workload that does not exist (``observe``
  only reads), which reaches the Docker daemon or the Kubernetes API and costs the
  process backend a file lookup.

Liveness (``/healthz``) needs none of this: answering at all is the proof.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from demanager.backends.base import Backend
from demanager.store.database import head_revision

log = logging.getLogger(__name__)

PROBE_ID = "00000000-0000-4000-8000-000000000000"
"""The instance the backend check observes: an id no instance is ever given."""
DATABASE_TIMEOUT = 1.0
BACKEND_TIMEOUT = 2.0
BACKEND_CACHE_SECONDS = 2.0
"""A backend's answer is reused this long: probes every second from several places
should not each reach the cluster's API."""
OK = "ok"


@dataclass(frozen=True)
class ReadinessReport:
    checks: dict[str, str]
    """Check name -> ``ok`` or what is wrong (no secret: no URL, no credential)."""

    @property
    def ready(self) -> bool:
        return all(value == OK for value in self.checks.values())


class Readiness:
    def __init__(
        self, engine: AsyncEngine, backend: Backend, *, now: Callable[[], float] = time.monotonic
    ) -> None:
        self._engine = engine
        self._backend = backend
        self._now = now
        # The migrations on disk do not change while the server runs: read them once.
        self._heads = frozenset({head_revision()})
        self._backend_answer: tuple[float, str] | None = None

    async def check(self) -> ReadinessReport:
        database, migrations = await self._database()
        return ReadinessReport(
            {"database": database, "migrations": migrations, "backend": await self._backend_ok()}
        )

    async def _database(self) -> tuple[str, str]:
        try:
            async with asyncio.timeout(DATABASE_TIMEOUT), self._engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
                try:
                    rows = await conn.execute(text("SELECT version_num FROM alembic_version"))
                    current = frozenset(str(row[0]) for row in rows)
                except SQLAlchemyError:
                    current = frozenset()  # no schema at all
        except TimeoutError:
            return f"no answer within {DATABASE_TIMEOUT:g} s", "unknown"
        except Exception as exc:
            # The driver's message may name the host and user; its kind is enough here,
            # the log has the rest.
            log.warning("readiness: the database failed: %s", exc)
            return f"unreachable ({type(exc).__name__})", "unknown"
        if current == self._heads:
            return OK, OK
        have = ", ".join(sorted(current)) or "none"
        want = ", ".join(sorted(self._heads))
        return OK, f"the database is at {have}; this release needs {want}"

    async def _backend_ok(self) -> str:
        now = self._now()
        if self._backend_answer is not None and now - self._backend_answer[0] < (
            BACKEND_CACHE_SECONDS
        ):
            return self._backend_answer[1]
        try:
            async with asyncio.timeout(BACKEND_TIMEOUT):
                await self._backend.observe(PROBE_ID, None)
            answer = OK
        except TimeoutError:
            answer = f"the {self._backend.name} backend did not answer within {BACKEND_TIMEOUT:g} s"
        except Exception as exc:
            log.warning("readiness: the %s backend failed: %s", self._backend.name, exc)
            answer = f"the {self._backend.name} backend failed ({type(exc).__name__})"
        self._backend_answer = (now, answer)
        return answer
