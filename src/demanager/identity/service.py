"""Credentials to principals, and the operator's management of users and tokens.

The checks follow the contract's order (§1.3): a token present, known and not
revoked, not expired, bound to a project whose member its user still is, and
that project the one in the path.

A token found valid is remembered for a few seconds (``identity/cache.py``); every
change to tokens, users or memberships made here, or by an operator command on the
same data dir, forgets them all at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from demanager import errors
from demanager.identity import links, secrets
from demanager.identity.cache import TokenCache
from demanager.identity.principal import Principal, Role
from demanager.store.identity import Account, IdentityRepository, TokenInfo, User

log = logging.getLogger(__name__)

MAX_PROJECT_ID = 64
"""The store keeps project IDs of up to 64 characters (upstream: 32 hex), so no token is
bound to a longer one; the operator's token, valid for any project, is held to it too."""
OPERATOR_NAME = "admin"


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_at: int | None


@dataclass(frozen=True)
class ValidToken:
    """A valid user token, as Keystone's token validation shows it."""

    principal: Principal
    issued_at: int
    expires_at: int | None


@dataclass(frozen=True)
class IssuedGrant:
    value: str
    expires_at: int


class IdentityService:
    def __init__(
        self,
        *,
        repository: IdentityRepository,
        key: bytes,
        now_ms: Callable[[], int],
        operator: User,
        operator_token: str,
        cache_seconds: float = 0.0,
        change_marker: Path | None = None,
    ) -> None:
        """``cache_seconds``: how long a token found valid is taken as valid without
        asking the store again (its expiry is still checked); 0: always ask.
        ``change_marker``: the file in the data dir that tells every process sharing it
        of a change to tokens, users or memberships (``identity/cache.py``)."""
        self._repo = repository
        self._cache: TokenCache[ValidToken] = TokenCache(
            ttl_seconds=cache_seconds, marker=change_marker)
        self._key = key
        self._now_ms = now_ms
        self.operator = operator
        self._operator_digest = secrets.token_digest(key, operator_token)
        self._pending: dict[tuple[str, int], asyncio.Future[ValidToken]] = {}

    @property
    def key(self) -> bytes:
        """The server key, for other signed credentials (links, session cookies)."""
        return self._key

    def digest(self, token: str) -> str:
        return secrets.token_digest(self._key, token)

    # --- authentication ---------------------------------------------------------------

    async def authenticate(self, token: str | None, project_id: str) -> Principal:
        """The principal a request to ``/v1/{project_id}/…`` carrying ``token`` acts as."""
        principal = await self.resolve(token, project_id)
        if principal.project_id != project_id:
            raise errors.ProjectMismatch()
        return principal

    async def resolve(self, token: str | None, project_id: str | None = None) -> Principal:
        """The principal of ``token`` in its own project. The operator's token, bound to
        no project, acts in ``project_id`` (and is refused where none is given)."""
        if not token:
            raise errors.TokenMissing()
        return await self._of_digest(self.digest(token), project_id)

    async def caller(self, token: str | None) -> Principal:
        """Who presents ``token`` outside any project path: a user in the token's own
        project, or the operator (whose ``project_id`` is then empty)."""
        if token and secrets.same_digest(self.digest(token), self._operator_digest):
            op = self.operator
            return Principal(op.id, op.name, "", Role.ADMIN, operator=True)
        return await self.resolve(token)

    async def validate(self, token: str) -> ValidToken:
        """A user token's principal and times; the operator's token is no user token and
        fails as ``ProjectMismatch``."""
        digest = self.digest(token)
        if secrets.same_digest(digest, self._operator_digest):
            raise errors.ProjectMismatch()
        return await self._check(digest)

    async def _of_digest(self, digest: str, project_id: str | None) -> Principal:
        if secrets.same_digest(digest, self._operator_digest):
            if project_id is None or len(project_id) > MAX_PROJECT_ID:
                raise errors.ProjectMismatch()
            op = self.operator
            return Principal(op.id, op.name, project_id, Role.ADMIN, operator=True,
                             token_digest=digest)
        return (await self._check(digest)).principal

    async def _check(self, digest: str) -> ValidToken:
        valid = self._cache.get(digest)
        if valid is None:
            valid = await self._shared_lookup(digest)
        elif valid.expires_at is not None and valid.expires_at <= self._now_ms():
            raise errors.TokenExpired()
        return valid

    async def _shared_lookup(self, digest: str) -> ValidToken:
        """One lookup of a digest at a time: when a remembered token runs out under load,
        every request that holds it would otherwise ask the store at once (the latency
        tail of docs/benchmarks.md, Peers). A request joins only a lookup begun under the
        cache's current generation, so none begun before a revocation answers it."""
        generation = self._cache.generation
        key = (digest, generation)
        pending = self._pending.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._lookup(digest))
            self._pending[key] = pending
            pending.add_done_callback(lambda done: self._settled(key, done))
        # Shielded: a caller that goes away does not cancel the others' answer.
        valid = await asyncio.shield(pending)
        self._cache.put(digest, valid, generation)
        return valid

    def _settled(self, key: tuple[str, int], done: asyncio.Future[ValidToken]) -> None:
        self._pending.pop(key, None)
        if not done.cancelled():
            done.exception()  # retrieved, also when every caller went away

    async def _lookup(self, digest: str) -> ValidToken:
        record = await self._repo.lookup(digest)
        if record is None or record.revoked:
            raise errors.TokenInvalid()
        if record.expires_at is not None and record.expires_at <= self._now_ms():
            raise errors.TokenExpired()
        if not record.project_id:
            raise errors.TokenWithoutProject()
        if record.user is None or not record.user.enabled or record.role is None:
            raise errors.UserUnavailable()
        principal = Principal(
            record.user.id, record.user.name, record.project_id, Role(record.role),
            token_digest=digest,
        )
        return ValidToken(principal, record.issued_at, record.expires_at)

    # --- grants: signed links, session cookies ----------------------------------------

    def grant(self, principal: Principal, instance_id: str, *, ttl_seconds: int) -> IssuedGrant:
        """A signed value that lets ``principal`` into one instance until it expires."""
        expires_at = self._now_ms() + ttl_seconds * 1000
        value = links.sign(self._key, links.Grant(
            user_id=principal.user_id, project_id=principal.project_id,
            instance_id=instance_id, expires_at=expires_at,
            token_digest=principal.token_digest,
        ))
        return IssuedGrant(value, expires_at)

    async def redeem(self, value: str, instance_id: str) -> Principal:
        """The principal a grant for ``instance_id`` stands for, checked as on first use:
        the token it came from is still valid, the user still enabled and still in the
        project. A grant for another instance is invalid here."""
        grant = links.verify(self._key, value, now_ms=self._now_ms())
        if grant.instance_id != instance_id:
            raise errors.TokenInvalid()
        if grant.token_digest is not None:
            principal = await self._of_digest(grant.token_digest, grant.project_id)
            if principal.user_id != grant.user_id or principal.project_id != grant.project_id:
                raise errors.TokenInvalid()
            return principal
        found = await self._repo.standing(grant.user_id, grant.project_id)
        if found is None:
            raise errors.UserUnavailable()
        user, role = found
        if not user.enabled or role is None:
            raise errors.UserUnavailable()
        return Principal(user.id, user.name, grant.project_id, Role(role))

    async def sign_in(
        self, *, project_id: str, token: str | None = None,
        user_name: str | None = None, password: str | None = None,
    ) -> Principal:
        """A browser's sign-in: an API token, or a user name and password, in a project."""
        if token:
            return await self.authenticate(token, project_id)
        if not user_name or not password:
            raise errors.TokenMissing()
        user = await self.check_password(password, user_name=user_name)
        role = await self.role_in(user, project_id)
        if role is None:
            raise errors.LoginFailed()  # the same answer as a wrong password
        return Principal(user.id, user.name, project_id, role)

    async def check_password(
        self, password: str, *, user_name: str | None = None, user_id: str | None = None
    ) -> User:
        """The enabled user whose password this is; ``LoginFailed`` otherwise, the same
        way whether the user is unknown, disabled or the password wrong."""
        found = await self._repo.find_user(name=user_name, user_id=user_id)
        user, stored = found if found is not None else (None, None)
        ok = secrets.verify_password(stored, password)
        if user is None or not ok or not user.enabled:
            raise errors.LoginFailed()
        return user

    async def role_in(self, user: User, project_id: str) -> Role | None:
        role = (await self._repo.roles(user.id)).get(project_id)
        return Role(role) if role is not None else None

    async def memberships(self, user: User) -> dict[str, Role]:
        """Project id -> the user's role there."""
        return {p: Role(r) for p, r in (await self._repo.roles(user.id)).items()}

    async def issue(
        self, user: User, project_id: str | None, *, ttl_seconds: int | None
    ) -> IssuedToken:
        now = self._now_ms()
        expires_at = now + ttl_seconds * 1000 if ttl_seconds else None
        token = secrets.new_token()
        await self._repo.add_token(
            digest=self.digest(token), user_id=user.id, project_id=project_id, now_ms=now,
            expires_at=expires_at,
        )
        return IssuedToken(token, expires_at)

    # --- the operator's commands ------------------------------------------------------

    async def create_user(
        self, name: str, *, project_id: str, role: Role, password: str | None
    ) -> User:
        hashed = secrets.hash_password(password) if password is not None else None
        user = await self._repo.create_user(name, now_ms=self._now_ms(), password_hash=hashed)
        if user is None:
            raise errors.UserExists(name)
        await self._repo.set_role(user.id, project_id, role.value)
        self._cache.changed()
        return user

    async def add_to_project(self, name: str, *, project_id: str, role: Role) -> None:
        found = await self._repo.find_user(name=name)
        if found is None:
            raise errors.UnknownUser(name)
        await self._repo.set_role(found[0].id, project_id, role.value)
        self._cache.changed()

    async def issue_for(
        self, name: str, project_id: str, *, ttl_seconds: int | None, create: bool = True
    ) -> IssuedToken:
        """A token for user ``name`` in ``project_id``; a new name becomes a token-only
        member of the project."""
        if create:
            user = await self._repo.ensure_user(name, now_ms=self._now_ms())
            await self._repo.ensure_member(user.id, project_id, Role.MEMBER.value)
        else:
            found = await self._repo.find_user(name=name)
            if found is None:
                raise errors.UnknownUser(name)
            user = found[0]
            if await self.role_in(user, project_id) is None:
                raise errors.UnknownUser(name)
        return await self.issue(user, project_id, ttl_seconds=ttl_seconds)

    async def revoke(self, token_or_id: str) -> bool:
        """Revoke by the token itself or by its id (as ``tokens list`` shows it)."""
        try:
            if await self._repo.revoke(digest=self.digest(token_or_id)):
                return True
            return await self._repo.revoke(token_id=token_or_id)
        finally:
            self._cache.changed()

    async def tokens(self, user_name: str | None = None) -> list[TokenInfo]:
        return await self._repo.tokens(user_name)

    async def accounts(self) -> list[Account]:
        return await self._repo.accounts()

    async def delete_user(self, name: str) -> bool:
        try:
            return await self._repo.delete_user(name)
        finally:
            self._cache.changed()

    async def set_enabled(self, name: str, enabled: bool) -> bool:
        try:
            return await self._repo.set_enabled(name, enabled)
        finally:
            self._cache.changed()
