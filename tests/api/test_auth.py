"""Authentication and authorization: contract §1.3 (codes, HTTP statuses, check order)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import pytest

from tests.api.helpers import assert_error, build, create, listing, ok
from tests.conftest import client_for
from tests.server import ServerProcess


@dataclass
class Tokens:
    project: str
    valid: str
    other_project: str
    expired: str
    revoked: str
    disabled: str
    no_project: str
    instance_id: str


@pytest.fixture(scope="module")
def tokens(server: ServerProcess) -> Iterator[Tokens]:
    """Tokens of every kind, made once: the CLI runs where the server runs."""
    project = uuid.uuid4().hex
    tag = uuid.uuid4().hex[:8]
    wanted = {
        "expired": (project, f"late-{tag}", "--expires-in", "1"),
        "revoked": (project, f"revoked-{tag}"),
        "disabled": (project, f"disabled-{tag}"),
        "valid": (project, f"valid-{tag}"),
        "no_project": ("", f"nowhere-{tag}"),
    }
    # Each CLI call takes about a second: run them side by side.
    with ThreadPoolExecutor(len(wanted)) as pool:
        issued = time.monotonic()
        futures = {k: pool.submit(server.make_token, *args) for k, args in wanted.items()}
        made = {k: f.result() for k, f in futures.items()}
        # the same user in another project: after its first token, not beside it
        other = pool.submit(server.make_token, uuid.uuid4().hex, f"valid-{tag}")
        steps = [pool.submit(server.cli, "tokens", "revoke", made["revoked"]),
                 pool.submit(server.cli, "users", "disable", f"disabled-{tag}")]
        assert all(step.result().returncode == 0 for step in steps)
        made["other_project"] = other.result()
    with client_for(server, project=project, token=made["valid"]) as client:
        instance_id = create(client)["id"]
    result = Tokens(project=project, instance_id=instance_id, **made)
    time.sleep(max(0.0, 1.2 - (time.monotonic() - issued)))  # let the 1 s token expire
    yield result


def requests_of(instance_id: str) -> list[tuple[str, str, dict[str, object]]]:
    """One request per route (§1.1), each otherwise valid."""
    return [
        ("POST", "", {"json": build(name=f"n{uuid.uuid4().hex[:6]}")}),
        ("GET", "", {"params": {"de_type": "Notebook"}}),
        ("GET", f"/{instance_id}", {}),
        ("PUT", f"/{instance_id}", {"json": {}}),
        ("DELETE", f"/{instance_id}", {}),
        ("POST", f"/{instance_id}/action", {"json": {"action": "stop"}}),
        ("GET", f"/{instance_id}/token", {}),
        ("POST", f"/{instance_id}/signed-url", {}),
    ]


ROUTE_IDS = ["create", "list", "get", "update", "delete", "action", "token", "signed-url"]


def call(server: ServerProcess, project: str, token: str | None, headers: dict[str, str],
         method: str, path: str, kwargs: dict[str, object]) -> httpx.Response:
    with client_for(server, project=project, token=token) as client:
        client.headers.update(headers)
        return client.request(method, path, **kwargs)  # type: ignore[arg-type]


CASES = [
    pytest.param("missing", {}, 401, "0201", id="no-token"),
    pytest.param("missing", {"X-Auth-Token": ""}, 401, "0201", id="empty-token"),
    pytest.param("missing", {"Authorization": "Bearer whatever", "X-Sdk-Date": "20240101T000000Z"},
                 401, "0201", id="signature-only"),
    pytest.param("unknown", {}, 401, "6620", id="unknown-token"),
    pytest.param("revoked", {}, 401, "6620", id="revoked-token"),
    pytest.param("expired", {}, 401, "0202", id="expired-token"),
    pytest.param("no_project", {}, 401, "0212", id="token-without-project"),
    pytest.param("disabled", {}, 401, "6608", id="disabled-user"),
    pytest.param("other_project", {}, 403, "0210", id="other-project"),
]


def pick(tokens: Tokens, kind: str) -> str:
    if kind == "missing":
        return ""
    if kind == "unknown":
        return "dmt_" + uuid.uuid4().hex
    token: str = getattr(tokens, kind)
    return token


@pytest.mark.parametrize("route", range(len(ROUTE_IDS)), ids=ROUTE_IDS)
@pytest.mark.parametrize(("kind", "headers", "status", "code"), CASES)
def test_every_route_refuses(server: ServerProcess, tokens: Tokens, route: int, kind: str,
                             headers: dict[str, str], status: int, code: str) -> None:
    method, path, kwargs = requests_of(tokens.instance_id)[route]
    response = call(server, tokens.project, pick(tokens, kind), headers, method, path, kwargs)
    assert_error(response, f"ModelArts.{code}", status)


def test_refusals_change_nothing(server: ServerProcess, tokens: Tokens) -> None:
    with client_for(server, project=tokens.project, token=tokens.valid) as client:
        body = listing(client, show_self="false")
        assert {i["name"] for i in body["instances"]} <= {"nb", "by-user"}
        assert ok(client.get(f"/{tokens.instance_id}"))["id"] == tokens.instance_id


def test_auth_comes_before_the_endpoint(server: ServerProcess, tokens: Tokens) -> None:
    for token, code in (("", "0201"), ("bogus", "6620"), (tokens.other_project, "0210")):
        with client_for(server, project=tokens.project, token=token) as client:
            status = 403 if code == "0210" else 401
            assert_error(client.post("", content=b"{"), f"ModelArts.{code}", status)
            assert_error(client.get("/DE-unknown"), f"ModelArts.{code}", status)
            assert_error(client.get("", params={"de_type": "bad"}), f"ModelArts.{code}", status)
            assert_error(client.post("/DE-unknown/action", json={"action": "x"}),
                         f"ModelArts.{code}", status)


def test_check_order_between_auth_failures(server: ServerProcess, tokens: Tokens) -> None:
    other = uuid.uuid4().hex
    # expired (step 3) and disabled (step 4) win over the project mismatch (step 5)
    for token, code in ((tokens.expired, "0202"), (tokens.disabled, "6608"),
                        (tokens.revoked, "6620"), (tokens.no_project, "0212")):
        with client_for(server, project=other, token=token) as client:
            assert_error(client.get("", params={"de_type": "Notebook"}), f"ModelArts.{code}", 401)


def test_routing_comes_before_auth(server: ServerProcess) -> None:
    with client_for(server, token="") as client:
        assert_error(client.get("/x/y/z"), "ModelArts.2836", 404)
        assert_error(client.patch("/x"), "ModelArts.2803", 405)
        assert_error(client.delete(""), "ModelArts.2803", 405)


def test_valid_user_token(server: ServerProcess, tokens: Tokens) -> None:
    with client_for(server, project=tokens.project, token=tokens.valid) as client:
        created = create(client, name="by-user")
        assert created["user"]["name"].startswith("valid-")
        assert created["user"] == ok(client.get(f"/{tokens.instance_id}"))["user"]


def test_operator_token_is_valid_for_any_project(server: ServerProcess) -> None:
    for project in (uuid.uuid4().hex, "my-project", "0"):
        with client_for(server, project=project) as client:
            created = create(client)
            assert created["user"]["name"] == "admin"
            assert listing(client)["total_count"] == 1


def test_operator_token_and_overlong_project(server: ServerProcess) -> None:
    with client_for(server, project="p" * 65) as client:
        assert_error(client.post("", json=build()), "ModelArts.0210", 403)
        assert_error(client.get("", params={"de_type": "Notebook"}), "ModelArts.0210", 403)
    with client_for(server, project="p" * 64) as client:
        create(client)


def test_token_is_not_a_bearer_header(server: ServerProcess, tokens: Tokens) -> None:
    with client_for(server, project=tokens.project, token="") as client:
        client.headers["Authorization"] = f"Bearer {tokens.valid}"
        assert_error(client.get("", params={"de_type": "Notebook"}), "ModelArts.0201", 401)


def test_header_name_is_case_insensitive(server: ServerProcess, tokens: Tokens) -> None:
    with client_for(server, project=tokens.project, token="") as client:
        client.headers["x-auth-token"] = tokens.valid
        assert ok(client.get("", params={"de_type": "Notebook"}))["total_count"] >= 1
