"""Routing and the response envelope: contract §1.1, §1.6, §1.7, §1.8."""

from __future__ import annotations

import httpx
import pytest

from tests.api.helpers import assert_error, build, create, ok
from tests.server import ServerProcess

UNKNOWN_ROUTES = [
    "/",
    "/v1",
    "/v1/p",
    "/v1/p/demanager",
    "/v1/p/demanager/instance",
    "/v1/p/demanager/instances/x/y",
    "/v1/p/demanager/instances/x/action/y",
    "/v1/p/demanager/instances/x/start",
    "/v1/p/notebooks",
    "/v2/p/demanager/instances",
    "/V1/p/demanager/instances",
    "/v1/p/DEMANAGER/instances",
    "/v1//demanager/instances",
    "/nothing/here",
]


@pytest.mark.parametrize("path", UNKNOWN_ROUTES)
@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
def test_unknown_route_404(server: ServerProcess, method: str, path: str) -> None:
    response = httpx.request(method, f"{server.url}{path}", headers={"X-Auth-Token": server.token})
    assert_error(response, "ModelArts.2836", 404)
    assert response.headers.get("x-request-id")


WRONG_METHODS = [
    ("PUT", ""), ("DELETE", ""), ("PATCH", ""),
    ("POST", "/DE-x"), ("PATCH", "/DE-x"),
    ("GET", "/DE-x/action"), ("PUT", "/DE-x/action"), ("DELETE", "/DE-x/action"),
    ("POST", "/DE-x/token"), ("DELETE", "/DE-x/token"),
    ("PUT", "/"), ("GET", "/DE-x/action/"),
]


@pytest.mark.parametrize(("method", "path"), WRONG_METHODS)
def test_wrong_method_405(api: httpx.Client, method: str, path: str) -> None:
    response = api.request(method, path)
    assert_error(response, "ModelArts.2803", 405)


@pytest.mark.parametrize("suffix", ["/", "//"])
def test_trailing_slash_is_the_same_route(api: httpx.Client, suffix: str) -> None:
    created = api.post(suffix, json=build())
    assert created.status_code == 200 and not created.is_redirect
    instance_id = created.json()["id"]
    listed = api.get(suffix, params={"de_type": "Notebook"})
    assert ok(listed)["total_count"] == 1
    for response in (
        api.get(f"/{instance_id}{suffix}"),
        api.put(f"/{instance_id}{suffix}", json={"description": "x"}),
        api.post(f"/{instance_id}/action{suffix}", json={"action": "stop"}),
    ):
        assert response.status_code in (200, 400), response.text
        assert not response.is_redirect and "location" not in response.headers
    assert ok(api.get(f"/{instance_id}/"))["description"] == "x"


def test_success_envelope(api: httpx.Client) -> None:
    response = api.post("", json=build())
    assert response.status_code == 200  # every success is 200, create included (§1.7)
    assert response.headers["content-type"] == "application/json; charset=UTF-8"
    assert response.headers["x-request-id"]
    instance_id = response.json()["id"]
    deleted = api.get(f"/{instance_id}")
    assert deleted.headers["content-type"] == "application/json; charset=UTF-8"


def test_request_ids_differ(api: httpx.Client) -> None:
    ids = {api.get("", params={"de_type": "Notebook"}).headers["x-request-id"] for _ in range(3)}
    assert len(ids) == 3


def test_error_envelope(api: httpx.Client) -> None:
    for response in (api.get("/DE-unknown"), api.post("", content=b"{"),
                     api.get("", params={"de_type": "x"})):
        body = assert_error(response, response.json()["error_code"])
        assert list(body) == ["error_code", "error_message"]
        assert response.headers["x-request-id"]


def test_accept_header_is_ignored(api: httpx.Client) -> None:
    response = api.get("", params={"de_type": "Notebook"}, headers={"Accept": "text/html"})
    assert ok(response) == {"total_count": 0, "instances": []}


def test_body_on_get_and_delete_is_ignored(api: httpx.Client) -> None:
    created = create(api, profile_id="Failing profile")
    response = api.request("GET", f"/{created['id']}", content=b"not json")
    assert ok(response)["id"] == created["id"]
    response = api.request("GET", "", params={"de_type": "Notebook"}, content=b"{")
    assert ok(response)["total_count"] == 1


def test_head_and_options_are_not_routes(api: httpx.Client) -> None:
    for method in ("OPTIONS",):
        assert_error(api.request(method, ""), "ModelArts.2803", 405)
