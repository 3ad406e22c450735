"""Who is calling: ``X-Auth-Token`` to a caller bound to the path's project (contract §1.3)."""

from __future__ import annotations

from dataclasses import dataclass

from demanager import errors
from demanager.domain.instance import Owner, ProjectId, UserId
from demanager.engine.runtime import Runtime

HEADER = "X-Auth-Token"
MAX_PROJECT_ID = 64
"""The store keeps project IDs of up to 64 characters (upstream: 32 hex), so no token is
bound to a longer one; the operator's token, valid for any project, is held to it too."""


@dataclass(frozen=True)
class Caller:
    user_id: str
    user_name: str
    project_id: str
    operator: bool

    def owner(self) -> Owner:
        return Owner(UserId(self.user_id), self.user_name, ProjectId(self.project_id))


async def authenticate(runtime: Runtime, token: str | None, project_id: str) -> Caller:
    if not token:
        raise errors.TokenMissing()
    if runtime.is_operator_token(token):
        if len(project_id) > MAX_PROJECT_ID:
            raise errors.ProjectMismatch()
        op = runtime.operator
        return Caller(op.id, op.name, project_id, operator=True)
    record = await runtime.identity.lookup(token)
    if record is None or record.revoked:
        raise errors.TokenInvalid()
    if record.expires_at is not None and record.expires_at <= runtime.clock.now_ms():
        raise errors.TokenExpired()
    if not record.project_id:
        raise errors.TokenWithoutProject()
    if record.user is None or not record.user.enabled:
        raise errors.UserUnavailable()
    if record.project_id != project_id:
        raise errors.ProjectMismatch()
    return Caller(record.user.id, record.user.name, project_id, operator=False)
