"""Keystone v3 password sign-in and token validation, on top of ``IdentityService``.

Clients of Huawei Cloud IAM and OpenStack (keystoneauth, openstacksdk with
otcextensions) sign in with ``POST /v3/auth/tokens`` and then find the ModelArts
endpoint in the token's service catalog. This module turns such a request into
an ordinary demanager token (so ``demanager tokens`` lists and revokes it) and
builds the Keystone token document around it.

How Keystone's notions map here (docs/reference/api.md, "Keystone-compatible tokens"):

- one domain, configurable (name ``Default``, id ``default``); naming any other
  domain fails like a wrong password;
- a project's id is also its name, so scoping by id or by name is the same;
- a token must be bound to a project (contract 0212): a request without a scope
  is scoped to the user's only project, and refused if they have several or none;
  domain and system scopes are refused;
- the catalog's ModelArts entries point at ``{public_url}/v1/{project_id}``, the
  project filled in, because otcextensions' ``modelartsv1`` proxy appends its
  resource paths to the catalog URL as it is (it neither discovers versions nor
  adds the project id).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from demanager import errors
from demanager.identity.principal import Principal
from demanager.identity.service import IdentityService, ValidToken
from demanager.identity.throttle import LoginThrottle
from demanager.schemas import keystone as k
from demanager.store.identity import User

SERVICES = (
    ("modelartsv1", "modelartsv1", "/v1/{project_id}"),
    ("modelarts", "modelarts", "/v1/{project_id}"),
    ("identity", "keystone", "/v3"),
)
"""(type, name, path) of every catalog entry. ``modelartsv1`` is the type
otcextensions' Devenv proxy looks up; ``modelarts`` is IAM's own name for it."""

INTERFACES: tuple[k.Interface, ...] = ("public", "internal", "admin")
_IDS = uuid.UUID("6c0f3b1e-8d0c-4c55-9a55-2a3a7c1d0e11")
"""Namespace of the catalog's ids: stable across restarts and servers."""


@dataclass(frozen=True)
class KeystoneSettings:
    base_url: str
    """Where clients reach this server (``target_domain``), no trailing slash."""
    domain_id: str
    domain_name: str
    region: str
    token_ttl_seconds: int


@dataclass(frozen=True)
class SignIn:
    token: str
    document: k.TokenResponse


def iso(ms: int) -> str:
    """Keystone's timestamp form: ISO 8601, UTC, microseconds, ``Z``."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Keystone:
    def __init__(
        self, *, identity: IdentityService, settings: KeystoneSettings, throttle: LoginThrottle
    ) -> None:
        self._identity = identity
        self._settings = settings
        self._throttle = throttle
        self._domain = k.Domain(id=settings.domain_id, name=settings.domain_name)

    # --- sign-in ----------------------------------------------------------------------

    async def sign_in(self, request: k.AuthRequest, *, address: str) -> SignIn:
        identity = request.auth.identity
        if "password" not in identity.methods:
            raise errors.SignInRefused("Only the password authentication method is supported.")
        if identity.password is None:
            raise errors.InvalidPayload("auth.identity.password is required.")
        user_ref = identity.password.user
        user_key = self._user_key(user_ref)
        wait = self._throttle.retry_after(user_key, address)
        if wait:
            raise errors.LoginThrottled(wait)
        try:
            user = await self._check_password(user_ref)
        except errors.LoginFailed:
            self._throttle.failed(user_key, address)
            raise
        self._throttle.succeeded(user_key)
        project_id = await self._project(user, request.auth.scope)
        issued = await self._identity.issue(
            user, project_id, ttl_seconds=self._settings.token_ttl_seconds
        )
        valid = await self._identity.validate(issued.token)
        return SignIn(issued.token, self.document(valid.principal, valid.issued_at,
                                                  valid.expires_at))

    @staticmethod
    def _user_key(user: k.PasswordUser) -> str:
        if user.id is not None:
            return f"id:{user.id}"
        if user.name is None:
            raise errors.InvalidPayload("auth.identity.password.user needs an id or a name.")
        return f"name:{user.name}"

    async def _check_password(self, ref: k.PasswordUser) -> User:
        if ref.id is None:
            # A user name means nothing without its domain (Keystone requires one).
            if ref.domain is None:
                raise errors.InvalidPayload(
                    "auth.identity.password.user.domain is required with a user name."
                )
            self._check_domain(ref.domain, errors.LoginFailed())
            return await self._identity.check_password(ref.password, user_name=ref.name)
        if ref.domain is not None:
            self._check_domain(ref.domain, errors.LoginFailed())
        return await self._identity.check_password(ref.password, user_id=ref.id)

    def _check_domain(self, domain: k.DomainRef, refusal: errors.AuthError) -> None:
        if domain.id is None and domain.name is None:
            raise errors.InvalidPayload("A domain needs an id or a name.")
        if domain.id not in (None, self._domain.id) or domain.name not in (
            None, self._domain.name
        ):
            raise refusal

    async def _project(self, user: User, scope: k.Scope | str | None) -> str:
        memberships = await self._identity.memberships(user)
        if scope is None or scope == "unscoped":
            if len(memberships) != 1:
                raise errors.SignInRefused(
                    "A project scope is required: the user is a member of "
                    f"{len(memberships)} projects."
                )
            return next(iter(memberships))
        assert isinstance(scope, k.Scope)
        if scope.project is None:
            raise errors.SignInRefused(
                "Only project-scoped tokens are issued: a token must be bound to a project."
            )
        project = scope.project
        if project.id is None and project.name is None:
            raise errors.InvalidPayload("auth.scope.project needs an id or a name.")
        if project.id is None and project.domain is None:
            raise errors.InvalidPayload("auth.scope.project.domain is required with a name.")
        if project.domain is not None:
            self._check_domain(
                project.domain, errors.SignInRefused("No project in that domain.")
            )
        project_id = project.id if project.id is not None else project.name
        assert project_id is not None
        if project.name not in (None, project_id) or project_id not in memberships:
            raise errors.SignInRefused(f"The user has no access to project {project_id}.")
        return project_id

    # --- validation -------------------------------------------------------------------

    async def inspect(self, caller_token: str | None, subject_token: str | None) -> k.TokenResponse:
        """The document of ``subject_token`` for the holder of ``caller_token``: the
        operator, the subject's own user, or an admin of the subject's project."""
        caller = await self._identity.caller(caller_token)
        valid = await self._visible(caller, subject_token)
        return self.document(valid.principal, valid.issued_at, valid.expires_at)

    async def revoke(self, caller_token: str | None, subject_token: str | None) -> None:
        caller = await self._identity.caller(caller_token)
        await self._visible(caller, subject_token)
        assert subject_token is not None
        await self._identity.revoke(subject_token)

    async def _visible(self, caller: Principal, subject_token: str | None) -> ValidToken:
        if not subject_token:
            raise errors.TokenNotFound()
        try:
            valid = await self._identity.validate(subject_token)
        except (errors.AuthError, errors.ProjectMismatch):
            raise errors.TokenNotFound() from None
        subject = valid.principal
        if not (caller.operator or caller.user_id == subject.user_id
                or (caller.sees_project and caller.project_id == subject.project_id)):
            raise errors.TokenNotFound()
        return valid

    # --- the document -----------------------------------------------------------------

    def document(self, principal: Principal, issued_at: int, expires_at: int | None
                 ) -> k.TokenResponse:
        project = principal.project_id
        token = k.Token(
            methods=["password"],
            user=k.TokenUser(id=principal.user_id, name=principal.user_name,
                             domain=self._domain),
            project=k.TokenProject(id=project, name=project, domain=self._domain),
            roles=[k.RoleRef(id=principal.role.value, name=principal.role.value)],
            catalog=self.catalog(project),
            issued_at=iso(issued_at),
            expires_at=iso(expires_at) if expires_at is not None else None,
        )
        return k.TokenResponse(token=token)

    def catalog(self, project_id: str) -> list[k.Service]:
        region = self._settings.region
        services = []
        for type_, name, path in SERVICES:
            url = self._settings.base_url + path.format(project_id=project_id)
            endpoints = [
                k.Endpoint(id=uuid.uuid5(_IDS, f"{type_}/{interface}").hex,
                           interface=interface, region=region, region_id=region, url=url)
                for interface in INTERFACES
            ]
            services.append(k.Service(id=uuid.uuid5(_IDS, type_).hex, type=type_, name=name,
                                      endpoints=endpoints))
        return services
