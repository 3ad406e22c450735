"""Keystone v3 token routes (``/v3/auth/tokens``) and the ``/v3`` version document,
so that IAM and OpenStack clients can sign in with a password and find this server
in the token's catalog. The rules live in ``identity/keystone.py``; failures answer
in Keystone's error shape (``api/keystone_errors.py``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request, Response
from pydantic import BaseModel

from demanager import errors
from demanager.api.dependencies import RuntimeDep
from demanager.api.keystone_errors import KeystoneRoute, keystone_error
from demanager.api.responses import WireJSON
from demanager.engine.runtime import Runtime
from demanager.identity.keystone import Keystone, KeystoneSettings
from demanager.schemas import keystone as k

router = APIRouter(prefix="/v3", tags=["keystone"], route_class=KeystoneRoute)

SUBJECT = "X-Subject-Token"
_AUTH = "X-Auth-Token"


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    # "4XX" also keeps FastAPI from describing a 422 these routes never send.
    keys: list[int | str] = [*codes, "4XX"]
    return {key: {"model": k.ErrorBody} for key in keys}


def _inline(schema: Any, defs: dict[str, Any]) -> Any:
    """``schema`` with every ``$ref`` into ``defs`` replaced by its target (these
    models do not recurse), so the request body needs no extra components."""
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline(defs[ref.removeprefix("#/$defs/")], defs)
        return {key: _inline(value, defs) for key, value in schema.items() if key != "$defs"}
    if isinstance(schema, list):
        return [_inline(item, defs) for item in schema]
    return schema


def _request_body(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": _inline(schema, schema.get("$defs", {}))}}},
        "security": []}


_SUBJECT_HEADER = {"headers": {SUBJECT: {"description": "The token itself.",
                                         "schema": {"type": "string"}}}}


def get_keystone(request: Request, runtime: RuntimeDep) -> Keystone:
    """One per application: the failed-login counts must outlive a request."""
    keystone: Keystone | None = getattr(request.app.state, "keystone", None)
    if keystone is None:
        keystone = request.app.state.keystone = build(runtime)
    return keystone


def build(runtime: Runtime) -> Keystone:
    s = runtime.settings
    return Keystone(
        identity=runtime.identity,
        settings=KeystoneSettings(
            base_url=s.target_domain, domain_id=s.keystone_domain_id,
            domain_name=s.keystone_domain_name, region=s.keystone_region,
            token_ttl_seconds=s.keystone_token_ttl_seconds,
        ),
        throttle=runtime.login_throttle,
    )


KeystoneDep = Annotated[Keystone, Depends(get_keystone)]
CallerToken = Annotated[str | None, Header(alias=_AUTH, description="The caller's token.")]
SubjectToken = Annotated[
    str | None, Header(alias=SUBJECT, description="The token to validate or revoke.")
]


@router.post(
    "/auth/tokens", status_code=201, response_model=k.TokenResponse,
    openapi_extra=_request_body(k.AuthRequest),
    responses={201: _SUBJECT_HEADER, **_errors(400, 401, 429, 500)},
    summary="Sign in with a password: a project-scoped token in X-Subject-Token",
)
async def issue_token(request: Request, runtime: RuntimeDep, keystone: KeystoneDep
                      ) -> WireJSON:
    body = await request.body()
    if len(body) > runtime.settings.max_body_bytes:
        raise errors.InvalidPayload("The request body is too large.")
    auth = k.AuthRequest.model_validate_json(body)
    address = request.client.host if request.client else ""
    signed_in = await keystone.sign_in(auth, address=address)
    return WireJSON(signed_in.document.model_dump(mode="json"), status_code=201,
                    headers={SUBJECT: signed_in.token})


@router.get("/auth/tokens", response_model=k.TokenResponse,
            responses=_errors(401, 404, 500), summary="Validate a token")
async def validate_token(keystone: KeystoneDep, caller: CallerToken = None,
                         subject: SubjectToken = None) -> WireJSON:
    document = await keystone.inspect(caller, subject)
    return WireJSON(document.model_dump(mode="json"), headers={SUBJECT: subject or ""})


@router.head("/auth/tokens", status_code=200, responses=_errors(401, 404, 500),
             summary="Check a token", response_class=Response)
async def check_token(keystone: KeystoneDep, caller: CallerToken = None,
                      subject: SubjectToken = None) -> Response:
    await keystone.inspect(caller, subject)
    return Response(status_code=200)


@router.delete("/auth/tokens", status_code=204, responses=_errors(401, 404, 500),
               summary="Revoke a token", response_class=Response)
async def revoke_token(keystone: KeystoneDep, caller: CallerToken = None,
                       subject: SubjectToken = None) -> Response:
    await keystone.revoke(caller, subject)
    return Response(status_code=204)


@router.get("", response_model=k.VersionDocument, openapi_extra={"security": []},
            summary="Identity API v3 version document")
async def version(runtime: RuntimeDep) -> WireJSON:
    document = k.VersionDocument(version=k.Version(
        id="v3.14", status="stable", updated="2020-04-07T00:00:00Z",
        links=[k.VersionLink(rel="self", href=f"{runtime.settings.target_domain}/v3/")],
        media_types=[k.MediaType(base="application/json",
                                 type="application/vnd.openstack.identity-v3+json")],
    ))
    return WireJSON(document.model_dump(mode="json", by_alias=True))


TOKEN_METHODS = "DELETE, GET, HEAD, POST"
"""What ``/v3/auth/tokens`` answers (its 405 names them, RFC 9110)."""

router.add_api_route("/", version, methods=["GET"], include_in_schema=False)


@router.api_route("/{path:path}",
                  methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
                  include_in_schema=False)
async def elsewhere(path: str) -> Response:
    """Unknown paths and methods under ``/v3`` answer in Keystone's shape too."""
    if path.rstrip("/") == "auth/tokens":
        return keystone_error(405, "The method is not allowed on this resource.",
                              headers={"Allow": TOKEN_METHODS})
    return keystone_error(404, "The resource could not be found.")
