"""Who may pass: the caller's credential, checked on every request and upgrade.

A caller proves who they are with one of (first found wins):

1. ``X-Auth-Token``: an API token, as for the REST API (scripts, the SDK);
2. ``?token=``: a signed grant (a signed link, or the token route's value);
3. ``Authorization: token …``: the same grant, the way Jupyter clients send one
   (values of other shapes in these two places are ignored, and never forwarded);
4. the session cookie the proxy set after a sign-in or a signed link.

Then the instance must be live, in the principal's project, and theirs to use
(``Principal.may_use``). A caller who may not use it gets exactly the answer of
a missing instance, so instance ids cannot be probed; credentials are checked
before the instance is looked at, so their errors say nothing about it either.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import Enum

from demanager import errors
from demanager.domain.instance import Instance
from demanager.domain.lifecycle import InstanceStatus
from demanager.engine.runtime import Runtime
from demanager.identity import links
from demanager.identity.principal import Principal
from demanager.proxy import forwarding
from demanager.proxy.forwarding import RawHeaders


class Source(Enum):
    API_TOKEN = "api-token"
    QUERY = "query"
    AUTHORIZATION = "authorization"
    COOKIE = "cookie"


@dataclass(frozen=True)
class Credential:
    source: Source
    value: str

    @property
    def is_grant(self) -> bool:
        return self.source is not Source.API_TOKEN


def credential_of(headers: RawHeaders, query_token: str | None) -> Credential | None:
    headers = list(headers)
    api_token = forwarding.header(headers, "x-auth-token")
    if api_token:
        return Credential(Source.API_TOKEN, api_token)
    # Only values shaped like our grants count: JupyterLab sends back whatever token its
    # page gave it (masked by ``scrub``), and that must not shadow the session cookie.
    if query_token and query_token.startswith(links.PREFIX):
        return Credential(Source.QUERY, query_token)
    scheme, _, value = (forwarding.header(headers, "authorization") or "").partition(" ")
    if scheme.lower() == "token" and value.strip().startswith(links.PREFIX):
        return Credential(Source.AUTHORIZATION, value.strip())
    cookie = forwarding.session_cookie(headers)
    if cookie:
        return Credential(Source.COOKIE, cookie)
    return None


async def principal_for(runtime: Runtime, credential: Credential | None,
                        instance: Instance | None, instance_id: str) -> Principal:
    """Who the credential stands for (auth errors raise here, before anything about the
    instance is revealed)."""
    if credential is None:
        raise errors.TokenMissing()
    if credential.is_grant:
        return await runtime.identity.redeem(credential.value, instance_id)
    # The operator's token is bound to no project: it acts in the instance's.
    project = instance.project_id if instance is not None else ""
    return await runtime.identity.resolve(credential.value, project)


def ensure_may_use(principal: Principal, instance: Instance | None, instance_id: str) -> Instance:
    if (
        instance is None
        or instance.status is InstanceStatus.DELETED
        or instance.project_id != principal.project_id
        or not principal.may_use(instance.user_id)
    ):
        raise errors.InstanceNotFound(instance_id)
    return instance


class InstanceCache:
    """Instance rows, kept for ``ttl`` seconds.

    A notebook page fires dozens of requests at once; reading the row once per
    second instead of once per request halves the proxy's cost. What may be stale
    is harmless: owner and project never change, and a status or endpoint at most
    ``ttl`` old only means a request reaches a workload that is stopping (and is
    refused by it). Only a row that lets a request through is kept: one that would
    refuse it (not running, no endpoint yet) is read again, so a notebook that has
    just started again is reached at once, at its new endpoint; and a kept row whose
    endpoint refuses a connection is read again at once (``forget``), which covers a
    restart quicker than ``ttl`` (a forked server restarts in well under a second).
    Credentials are never cached: each request's is checked.
    """

    def __init__(self, runtime: Runtime, *, ttl: float = 1.0, size: int = 4096) -> None:
        self._runtime = runtime
        self._ttl = ttl
        self._size = size
        self._rows: dict[str, tuple[float, Instance | None]] = {}

    def forget(self, instance_id: str) -> None:
        """Read the row again next time: its endpoint refused a connection."""
        self._rows.pop(instance_id, None)

    async def get(self, instance_id: str) -> Instance | None:
        now = time.monotonic()
        cached = self._rows.get(instance_id)
        if cached is not None and now - cached[0] < self._ttl and _open(cached[1]):
            return cached[1]
        instance = await self._runtime.instances.load(instance_id)
        if len(self._rows) >= self._size:
            self._rows.clear()  # crude but bounded: ids are caller-chosen
        self._rows[instance_id] = (now, instance)
        return instance


def _open(instance: Instance | None) -> bool:
    return (
        instance is not None
        and instance.status is InstanceStatus.RUNNING
        and instance.endpoint is not None
    )


async def admit(runtime: Runtime, credential: Credential | None, instance_id: str,
                cache: InstanceCache) -> tuple[Principal, Instance]:
    """The caller and the instance they may use, or the error to answer with."""
    instance = await cache.get(instance_id)
    principal = await principal_for(runtime, credential, instance, instance_id)
    return principal, ensure_may_use(principal, instance, instance_id)
