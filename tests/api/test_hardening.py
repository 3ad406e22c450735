"""The HTTP surface's defences, against a real server: body size limit (413), per-token
rate limit (429 ``ModelArts.6101``), ``Allow`` on 405, security headers and CORS."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.api.helpers import assert_error, build, create, ok, stored_count
from tests.conftest import client_for
from tests.server import ServerProcess

MAX_BODY = 1_048_576
"""The default ``DEMANAGER_MAX_BODY_BYTES``."""


def oversized_create_body() -> bytes:
    """A create body that is valid JSON in every respect but its size (2 MB)."""
    return json.dumps(build(description="x" * (2 * MAX_BODY))).encode()


def chunks(body: bytes, size: int = 65_536) -> Iterator[bytes]:
    """Streaming content: httpx sends it chunked, with no Content-Length."""
    for start in range(0, len(body), size):
        yield body[start:start + size]


# --- body size ---------------------------------------------------------------------------


def test_oversized_body_is_413_and_creates_nothing(api: httpx.Client) -> None:
    response = api.post("", content=oversized_create_body(),
                        headers={"Content-Type": "application/json"})
    assert_error(response, "ModelArts.6400", 413)
    assert str(MAX_BODY) in response.json()["error_message"]
    assert stored_count(api) == 0


def test_oversized_chunked_body_is_413(api: httpx.Client) -> None:
    body = oversized_create_body()
    response = api.post("", content=chunks(body))
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert_error(response, "ModelArts.6400", 413)
    assert stored_count(api) == 0


def test_oversized_body_on_update_and_action(api: httpx.Client) -> None:
    instance = create(api)
    big = json.dumps({"description": "y" * (MAX_BODY + 1)}).encode()
    assert_error(api.put(f"/{instance['id']}", content=big), "ModelArts.6400", 413)
    assert_error(api.post(f"/{instance['id']}/action", content=chunks(big)),
                 "ModelArts.6400", 413)
    assert ok(api.get(f"/{instance['id']}"))["description"] == instance["description"]


def test_small_chunked_body_is_read_as_usual(api: httpx.Client) -> None:
    body = json.dumps(build(name="chunked")).encode()
    response = api.post("", content=chunks(body, 16))
    assert ok(response)["name"] == "chunked"


def test_body_limit_is_a_setting(server_factory: Callable[..., ServerProcess]) -> None:
    proc = server_factory(backend="fake", env={"DEMANAGER_MAX_BODY_BYTES": "400"})
    with client_for(proc) as api:
        response = api.post("", json=build(description="z" * 400))
        assert_error(response, "ModelArts.6400", 413)
        assert ok(api.post("", json=build()))["status"] == "CREATING"


def test_notebook_proxy_paths_are_not_limited(server: ServerProcess) -> None:
    # Uploads to a notebook pass through the proxy whatever their size: the limiter
    # leaves /notebooks/ alone (the route itself answers, here: not found).
    response = httpx.post(f"{server.url}/notebooks/DE-none/api/contents/big.bin",
                          content=b"\0" * (2 * MAX_BODY), timeout=30)
    assert response.status_code != 413, response.text


# --- rate limit --------------------------------------------------------------------------

RATE, BURST = 0.2, 3
"""One request per 5 s after a burst of 3: the limit is reached at once and stays."""


@pytest.fixture
def limited(server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    return server_factory(backend="fake", env={
        "DEMANAGER_RATE_LIMIT_PER_SECOND": str(RATE),
        "DEMANAGER_RATE_LIMIT_BURST": str(BURST),
    })


def test_rate_limit_per_token(limited: ServerProcess) -> None:
    project = uuid.uuid4().hex
    other_token = limited.make_token(project, "other-user")
    with client_for(limited, project=project) as api:
        for _ in range(BURST):
            ok(api.get("", params={"de_type": "Notebook"}))
        refused = api.get("", params={"de_type": "Notebook"})
        assert_error(refused, "ModelArts.6101", 429)
        retry_after = int(refused.headers["retry-after"])
        assert 1 <= retry_after <= math.ceil(1 / RATE)
        # A refused request changes nothing either.
        assert_error(api.post("", json=build()), "ModelArts.6101", 429)
    with client_for(limited, project=project, token=other_token) as other:
        assert ok(other.get("", params={"de_type": "Notebook"}))["total_count"] == 0


def test_rate_limit_without_token_is_per_address(limited: ServerProcess) -> None:
    with client_for(limited, token="") as anonymous:
        for _ in range(BURST):
            assert_error(anonymous.get(""), "ModelArts.0201", 401)
        assert_error(anonymous.get(""), "ModelArts.6101", 429)
    with client_for(limited) as api:
        ok(api.get("", params={"de_type": "Notebook"}))


def test_rate_limit_zero_disables_it(server_factory: Callable[..., ServerProcess]) -> None:
    proc = server_factory(backend="fake", env={"DEMANAGER_RATE_LIMIT_PER_SECOND": "0",
                                               "DEMANAGER_RATE_LIMIT_BURST": "1"})
    with client_for(proc) as api:
        for _ in range(5):
            ok(api.get("", params={"de_type": "Notebook"}))


# --- 405 ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("PATCH", "", "GET, POST"),
    ("DELETE", "", "GET, POST"),
    ("POST", "/DE-x", "DELETE, GET, PUT"),
    ("GET", "/DE-x/action", "POST"),
    ("PUT", "/DE-x/token/", "GET"),
])
def test_405_lists_the_allowed_methods(api: httpx.Client, method: str, path: str,
                                       allow: str) -> None:
    response = api.request(method, path)
    assert_error(response, "ModelArts.2803", 405)
    assert response.headers["allow"] == allow


# --- security headers --------------------------------------------------------------------


def test_console_page_headers(server: ServerProcess) -> None:
    response = httpx.get(f"{server.url}/console")
    assert response.status_code == 200
    headers = response.headers
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "no-referrer"
    csp = headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp


def test_other_html_pages_may_not_be_framed(server: ServerProcess) -> None:
    response = httpx.get(f"{server.url}/docs")
    assert response.status_code == 200
    assert response.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


def test_api_answers_are_not_stored(api: httpx.Client) -> None:
    for response in (api.get("", params={"de_type": "Notebook"}), api.get("/DE-none"),
                     api.request("PATCH", "")):
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-content-type-options"] == "nosniff"


# --- CORS --------------------------------------------------------------------------------

ORIGIN = "https://console.example"


def preflight(url: str, origin: str) -> httpx.Response:
    return httpx.options(url, headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "x-auth-token, content-type",
    })


def test_no_cors_by_default(api: httpx.Client) -> None:
    response = api.get("", params={"de_type": "Notebook"}, headers={"Origin": ORIGIN})
    ok(response)
    assert not any(name.startswith("access-control-") for name in response.headers)
    answer = preflight(str(api.base_url), ORIGIN)
    assert_error(answer, "ModelArts.2803", 405)
    assert not any(name.startswith("access-control-") for name in answer.headers)


def test_cors_for_listed_origins(server_factory: Callable[..., ServerProcess]) -> None:
    proc = server_factory(backend="fake", env={
        "DEMANAGER_CORS_ORIGINS": f"{ORIGIN}, https://other.example"})
    with client_for(proc) as api:
        url = str(api.base_url)
        answer = preflight(url, ORIGIN)
        assert answer.status_code == 200
        assert answer.headers["access-control-allow-origin"] == ORIGIN
        assert "x-auth-token" in answer.headers["access-control-allow-headers"].lower()
        response = api.get("", params={"de_type": "Notebook"}, headers={"Origin": ORIGIN})
        ok(response)
        assert response.headers["access-control-allow-origin"] == ORIGIN
        assert "x-request-id" in response.headers["access-control-expose-headers"].lower()
        stranger = api.get("", params={"de_type": "Notebook"},
                           headers={"Origin": "https://evil.example"})
        ok(stranger)
        assert "access-control-allow-origin" not in stranger.headers
        refused = preflight(url, "https://evil.example")
        assert_error(refused, "ModelArts.6600", 400)
        assert "access-control-allow-origin" not in refused.headers
