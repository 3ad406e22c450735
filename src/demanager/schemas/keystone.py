"""Wire models of the Keystone v3 token API (``/v3/auth/tokens``), the dialect that
Huawei Cloud IAM, OpenStack's keystoneauth and openstacksdk speak.

Only the password method and project scope are modelled in full; other shapes
(``token`` method, domain or system scope) parse so that the server can refuse
them with Keystone's 401 rather than a 400. Unknown keys are ignored, as Keystone
does. Strings are bounded and must be storable text: a lone surrogate or a NUL
cannot reach the store or the password hasher.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints


def _storable(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text") from None
    return value


Name = Annotated[
    str, StringConstraints(min_length=1, max_length=255), AfterValidator(_storable)
]
Password = Annotated[str, StringConstraints(max_length=4096), AfterValidator(_storable)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class DomainRef(_Request):
    id: Name | None = None
    name: Name | None = None


class PasswordUser(_Request):
    id: Name | None = None
    name: Name | None = None
    domain: DomainRef | None = None
    password: Password = Field(json_schema_extra={"writeOnly": True})


class PasswordMethod(_Request):
    user: PasswordUser


class Identity(_Request):
    methods: list[Annotated[str, StringConstraints(max_length=64)]] = Field(
        min_length=1, max_length=8
    )
    password: PasswordMethod | None = None


class ProjectRef(_Request):
    id: Name | None = None
    name: Name | None = None
    domain: DomainRef | None = None


class Scope(_Request):
    project: ProjectRef | None = None
    domain: DomainRef | None = None
    system: dict[str, Any] | None = None


class Auth(_Request):
    identity: Identity
    scope: Scope | Literal["unscoped"] | None = None


class AuthRequest(_Request):
    """The body of ``POST /v3/auth/tokens``."""

    auth: Auth


class _Response(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Domain(_Response):
    id: str
    name: str


class TokenUser(_Response):
    id: str
    name: str
    domain: Domain


class TokenProject(_Response):
    id: str
    name: str
    domain: Domain


class RoleRef(_Response):
    id: str
    name: Literal["admin", "member"]


Interface = Literal["public", "internal", "admin"]


class Endpoint(_Response):
    id: str
    interface: Interface
    region: str
    region_id: str
    url: str


class Service(_Response):
    id: str
    type: str
    name: str
    endpoints: list[Endpoint]


class Token(_Response):
    methods: list[str]
    user: TokenUser
    project: TokenProject
    roles: list[RoleRef]
    catalog: list[Service]
    issued_at: str
    """ISO 8601 UTC with microseconds, as Keystone writes it."""
    expires_at: str | None
    """``null`` only for a token issued without an expiry (``demanager tokens create``)."""
    is_domain: bool = False


class TokenResponse(_Response):
    token: Token


class ErrorDetail(_Response):
    code: int
    title: str
    message: str


class ErrorBody(_Response):
    """Keystone's error shape; ``/v1`` keeps the contract's own."""

    error: ErrorDetail


class VersionLink(_Response):
    rel: str
    href: str


class MediaType(_Response):
    base: str
    type: str


class Version(_Response):
    id: str
    status: str
    updated: str
    links: list[VersionLink]
    media_types: list[MediaType] = Field(alias="media-types")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class VersionDocument(_Response):
    version: Version
