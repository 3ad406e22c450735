"""Keystone v3 password sign-in (``/v3/auth/tokens``) against a real server process:
the token document, its catalog, its use on ``/v1``, validation, revocation, and
Keystone-shaped errors (never the contract's shape, never a 500, never the password)."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.api.helpers import assert_error, create, listing
from tests.conftest import client_for
from tests.server import DEMANAGER, ServerProcess

PASSWORD = "correct horse battery staple"


def add_user(server: ServerProcess, name: str, project: str, password: str = PASSWORD,
             role: str = "member") -> None:
    subprocess.run(
        [DEMANAGER, "users", "create", name, "--project", project, "--role", role,
         "--password-stdin"],
        env=server.env, input=password + "\n", capture_output=True, text=True,
        check=True, timeout=60,
    )


def password_body(user: dict[str, Any], password: str = PASSWORD,
                  scope: Any = None) -> dict[str, Any]:
    auth: dict[str, Any] = {"identity": {"methods": ["password"], "password": {
        "user": {**user, "password": password}}}}
    if scope is not None:
        auth["scope"] = scope
    return {"auth": auth}


def by_name(name: str, project: str, password: str = PASSWORD) -> dict[str, Any]:
    return password_body({"name": name, "domain": {"name": "Default"}}, password,
                         {"project": {"name": project, "domain": {"name": "Default"}}})


def assert_keystone_error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "title", "message"}, body
    assert body["error"]["code"] == status
    assert isinstance(body["error"]["title"], str) and body["error"]["title"]
    assert PASSWORD not in response.text
    assert "x-subject-token" not in response.headers
    message: str = body["error"]["message"]
    return message


@dataclass
class World:
    server: ServerProcess
    project: str
    other_project: str
    alice: str
    admin: str
    disabled: str
    both: str
    """A member of two projects."""

    def post(self, body: Any, **kwargs: Any) -> httpx.Response:
        return httpx.post(f"{self.server.url}/v3/auth/tokens", json=body, timeout=30,
                          **kwargs)


@pytest.fixture(scope="module")
def world(server: ServerProcess) -> Iterator[World]:
    tag = uuid.uuid4().hex[:8]
    project, other = uuid.uuid4().hex, uuid.uuid4().hex
    w = World(server, project, other, f"alice-{tag}", f"boss-{tag}", f"gone-{tag}",
              f"both-{tag}")
    add_user(server, w.alice, project)
    add_user(server, w.admin, project, role="admin")
    add_user(server, w.disabled, project)
    add_user(server, w.both, project)
    assert server.cli("users", "add", w.both, "--project", other).returncode == 0
    assert server.cli("users", "disable", w.disabled).returncode == 0
    yield w


def sign_in(world: World, name: str, project: str | None = None) -> tuple[str, dict[str, Any]]:
    response = world.post(by_name(name, project or world.project))
    assert response.status_code == 201, response.text
    return response.headers["x-subject-token"], response.json()


def test_sign_in_by_name_gives_a_project_token_and_a_catalog(world: World) -> None:
    token, body = sign_in(world, world.alice)
    doc = body["token"]
    assert doc["methods"] == ["password"]
    assert doc["user"]["name"] == world.alice
    assert doc["user"]["domain"] == {"id": "default", "name": "Default"}
    assert doc["project"] == {"id": world.project, "name": world.project,
                              "domain": {"id": "default", "name": "Default"}}
    assert doc["roles"] == [{"id": "member", "name": "member"}]
    assert doc["expires_at"].endswith("Z") and doc["issued_at"] < doc["expires_at"]
    types = {s["type"]: s for s in doc["catalog"]}
    for kind in ("modelartsv1", "modelarts"):
        urls = {e["interface"]: e["url"] for e in types[kind]["endpoints"]}
        assert urls["public"] == f"{world.server.url}/v1/{world.project}"
        assert set(urls) == {"public", "internal", "admin"}
    assert token not in str(body)


def test_the_token_works_on_its_project_only(world: World) -> None:
    token, _ = sign_in(world, world.alice)
    with client_for(world.server, project=world.project, token=token) as api:
        made = create(api)
        assert made["user"]["name"] == world.alice
        assert [i["id"] for i in listing(api)["instances"]] == [made["id"]]
    with client_for(world.server, project=world.other_project, token=token) as api:
        assert_error(api.get(""), "ModelArts.0210", 403)


def test_sign_in_by_user_id_and_project_id(world: World) -> None:
    _, first = sign_in(world, world.admin)
    user_id = first["token"]["user"]["id"]
    response = world.post(password_body({"id": user_id}, scope={"project": {"id": world.project}}))
    assert response.status_code == 201, response.text
    assert response.json()["token"]["roles"] == [{"id": "admin", "name": "admin"}]


def test_an_unscoped_request_takes_the_only_project(world: World) -> None:
    body = password_body({"name": world.alice, "domain": {"id": "default"}})
    response = world.post(body)
    assert response.status_code == 201, response.text
    assert response.json()["token"]["project"]["id"] == world.project
    both = password_body({"name": world.both, "domain": {"id": "default"}})
    assert "project" in assert_keystone_error(world.post(both), 401)


@pytest.mark.parametrize("kind", ["domain", "system", "other-domain", "not-a-member"])
def test_scopes_that_cannot_be_granted_are_401(world: World, kind: str) -> None:
    scope = {
        "domain": {"domain": {"id": "default"}},
        "system": {"system": {"all": True}},
        "other-domain": {"project": {"name": world.project, "domain": {"name": "Elsewhere"}}},
        "not-a-member": {"project": {"id": uuid.uuid4().hex}},
    }[kind]
    body = password_body({"name": world.alice, "domain": {"name": "Default"}}, scope=scope)
    assert_keystone_error(world.post(body), 401)


def test_a_user_of_another_project_is_refused(world: World) -> None:
    assert_keystone_error(world.post(by_name(world.alice, world.other_project)), 401)


def test_credential_failures_all_look_the_same(world: World) -> None:
    wrong = world.post(by_name(world.admin, world.project, password="wrong password"))
    unknown = world.post(by_name(f"nobody-{uuid.uuid4().hex[:6]}", world.project))
    disabled = world.post(by_name(world.disabled, world.project))
    other_domain = world.post(password_body(
        {"name": world.admin, "domain": {"name": "Elsewhere"}},
        scope={"project": {"id": world.project}}))
    messages = {assert_keystone_error(r, 401) for r in (wrong, unknown, disabled, other_domain)}
    assert len(messages) == 1
    assert {r.json()["error"]["title"] for r in (wrong, unknown)} == {"Unauthorized"}


@pytest.mark.parametrize("body", [
    b"not json",
    b"[]",
    b'{"auth": {}}',
    b'{"auth": {"identity": {"methods": ["password"]}}}',
    b'{"auth": {"identity": {"methods": "password", "password": {}}}}',
    b'{"auth": {"identity": {"methods": ["password"], "password": {"user": {"name": "a", '
    b'"password": 5, "domain": {"id": "default"}}}}}}',
    b'{"auth": {"identity": {"methods": ["password"], "password": {"user": {"name": "a", '
    b'"password": "x"}}}}}',
    b'{"auth": {"identity": {"methods": ["password"], "password": {"user": {"name": "a", '
    b'"password": "\\ud800", "domain": {"id": "default"}}}}}}',
    b'{"auth": {"identity": {"methods": ["password"], "password": {"user": {"name": "a\\u0000",'
    b' "password": "x", "domain": {"id": "default"}}}}}}',
    b'{"auth": {"identity": {"methods": ["password"], "password": {"user": {"password": "x"}}}}}',
    b'{"auth": {"identity": {"methods": ["password"], "password": {"user": {"name": "a", '
    b'"password": "x", "domain": {}}}}}}',
], ids=["not-json", "array", "no-identity", "no-password", "methods-not-list", "password-int",
        "name-without-domain", "lone-surrogate", "nul-in-name", "no-user-id-or-name",
        "empty-domain"])
def test_malformed_bodies_are_400(world: World, body: bytes) -> None:
    response = httpx.post(f"{world.server.url}/v3/auth/tokens", content=body,
                          headers={"Content-Type": "application/json"}, timeout=30)
    assert_keystone_error(response, 400)


def test_other_methods_are_refused(world: World) -> None:
    body = {"auth": {"identity": {"methods": ["token"], "token": {"id": "x"}}}}
    assert_keystone_error(world.post(body), 401)


def test_validation_with_get_and_head(world: World) -> None:
    token, issued = sign_in(world, world.alice)
    url = f"{world.server.url}/v3/auth/tokens"
    mine = {"X-Auth-Token": token, "X-Subject-Token": token}
    got = httpx.get(url, headers=mine)
    assert got.status_code == 200, got.text
    assert got.json() == issued
    assert httpx.head(url, headers=mine).status_code == 200
    # the operator and the project's admin may inspect it, a stranger's token may not
    admin, _ = sign_in(world, world.admin)
    for caller in (world.server.token, admin):
        assert httpx.get(url, headers={"X-Auth-Token": caller, "X-Subject-Token": token}
                         ).status_code == 200
    stranger, _ = sign_in(world, world.both, world.other_project)
    assert_keystone_error(httpx.get(url, headers={"X-Auth-Token": stranger,
                                                  "X-Subject-Token": token}), 404)
    assert_keystone_error(httpx.get(url, headers={"X-Auth-Token": token,
                                                  "X-Subject-Token": "dm_nonsense"}), 404)
    assert_keystone_error(httpx.get(url, headers={"X-Auth-Token": "dm_nonsense",
                                                  "X-Subject-Token": token}), 401)
    assert_keystone_error(httpx.get(url, headers={"X-Subject-Token": token}), 401)
    assert httpx.head(url, headers={"X-Auth-Token": token, "X-Subject-Token": "x"}
                      ).status_code == 404


def test_revoked_tokens_fail_validation_and_the_api(world: World) -> None:
    token, _ = sign_in(world, world.alice)
    url = f"{world.server.url}/v3/auth/tokens"
    headers = {"X-Auth-Token": token, "X-Subject-Token": token}
    assert httpx.delete(url, headers=headers).status_code == 204
    assert_keystone_error(httpx.get(url, headers={"X-Auth-Token": world.server.token,
                                                  "X-Subject-Token": token}), 404)
    with client_for(world.server, project=world.project, token=token) as api:
        assert_error(api.get(""), "ModelArts.6620", 401)


def test_tokens_show_up_in_the_operators_list(world: World) -> None:
    sign_in(world, world.admin)
    listed = world.server.cli("tokens", "list", "--user", world.admin)
    assert listed.returncode == 0, listed.stderr
    assert world.project in listed.stdout


def test_unknown_v3_paths_answer_in_keystone_shape(world: World) -> None:
    assert_keystone_error(httpx.get(f"{world.server.url}/v3/projects"), 404)
    assert_keystone_error(httpx.put(f"{world.server.url}/v3/auth/tokens"), 405)
    version = httpx.get(f"{world.server.url}/v3")
    assert version.status_code == 200
    assert version.json()["version"]["id"].startswith("v3")


def test_failed_sign_ins_are_rate_limited(server_factory: Callable[..., ServerProcess]
                                          ) -> None:
    server = server_factory(backend="fake", env={
        "DEMANAGER_LOGIN_FAILURES_PER_USER": "3",
        "DEMANAGER_LOGIN_FAILURES_PER_ADDRESS": "5",
    })
    project = uuid.uuid4().hex
    add_user(server, "carol", project)
    add_user(server, "dave", project)
    url = f"{server.url}/v3/auth/tokens"
    for _ in range(3):
        assert_keystone_error(httpx.post(url, json=by_name("carol", project, "bad")), 401)
    # blocked now: even the right password is not checked
    blocked = httpx.post(url, json=by_name("carol", project))
    assert_keystone_error(blocked, 429)
    assert int(blocked.headers["retry-after"]) > 0
    # another user from the same address still gets in, and a success resets their count
    assert httpx.post(url, json=by_name("dave", project)).status_code == 201
    for _ in range(2):
        assert_keystone_error(httpx.post(url, json=by_name("dave", project, "bad")), 401)
    # the address has now failed 5 times: every user is held back
    assert_keystone_error(httpx.post(url, json=by_name("dave", project)), 429)


def test_the_openapi_document_describes_the_routes(world: World) -> None:
    document = httpx.get(f"{world.server.url}/openapi.json").json()
    post = document["paths"]["/v3/auth/tokens"]["post"]
    body = post["requestBody"]["content"]["application/json"]["schema"]
    user = body["properties"]["auth"]["properties"]["identity"]["properties"]["password"]
    assert "user" in str(user) and "password" in str(user)
    assert post["security"] == []
    assert "X-Subject-Token" in post["responses"]["201"]["headers"]
    assert {"201", "400", "401", "429"} <= set(post["responses"])
    assert "422" not in post["responses"]
    for method in ("get", "head", "delete"):
        responses = document["paths"]["/v3/auth/tokens"][method]["responses"]
        assert "404" in responses and "422" not in responses
