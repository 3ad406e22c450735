"""The proxy, the signed-url and token routes and ``annotations.url`` against a real
server with the fake backend, whose workloads are loopback echo servers that demand
their own upstream credential (``backends/echo_upstream.py``)."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.api.helpers import assert_error, create, ok
from tests.conftest import client_for
from tests.server import DEMANAGER, ServerProcess, wait_for_status

HTML = {"Accept": "text/html"}


@dataclass(frozen=True)
class Pair:
    project: str
    alice: str
    bob: str
    mine: str
    """alice's running instance"""
    stopped: str
    """alice's stopped instance"""


@pytest.fixture(scope="module")
def pair(server: ServerProcess) -> Iterator[Pair]:
    project = uuid.uuid4().hex
    alice = server.make_token(project, f"alice-{project[:6]}")
    bob = server.make_token(project, f"bob-{project[:6]}")
    with client_for(server, project=project, token=alice) as api:
        mine = create(api, name="mine")["id"]
        stopped = create(api, name="stopped")["id"]
        wait_for_status(api, mine, "RUNNING", 30)
        wait_for_status(api, stopped, "RUNNING", 30)
        api.post(f"/{stopped}/action", json={"action": "stop"})
        wait_for_status(api, stopped, "STOPPED", 30)
    yield Pair(project, alice, bob, mine, stopped)


def notebook(server: ServerProcess, instance_id: str, tail: str = "") -> str:
    return f"{server.url}/notebooks/{instance_id}/{tail}"


def ws_url(server: ServerProcess, instance_id: str, tail: str = "api/kernels/k/channels") -> str:
    return f"ws://127.0.0.1:{server.port}/notebooks/{instance_id}/{tail}"


# --- annotations.url, the token route, the signed-url route --------------------------


def test_annotations_url_is_the_proxy_address_without_a_secret(
    server: ServerProcess, pair: Pair
) -> None:
    with client_for(server, project=pair.project, token=pair.alice) as api:
        running = ok(api.get(f"/{pair.mine}"))
        stopped = ok(api.get(f"/{pair.stopped}"))
    assert running["spec"]["annotations"]["url"] == notebook(server, pair.mine)
    assert "token" not in running["spec"]["annotations"]["url"]
    assert stopped["spec"]["annotations"]["url"] == ""


def test_signed_url_route(server: ServerProcess, pair: Pair) -> None:
    with client_for(server, project=pair.project, token=pair.alice) as api:
        before = int(time.time() * 1000)
        link = ok(api.post(f"/{pair.mine}/signed-url"))
    assert set(link) == {"url", "expires_at"}
    assert link["url"].startswith(notebook(server, pair.mine, "lab?token=dmg_"))
    assert before + 290_000 <= link["expires_at"] <= before + 310_000  # 300 s by default
    with httpx.Client() as browser:
        entered = browser.get(link["url"], headers=HTML)
        assert entered.status_code == 303
        assert entered.headers["location"] == f"/notebooks/{pair.mine}/lab"
        echoed = browser.get(notebook(server, pair.mine, "lab")).json()
        assert echoed["path"] == f"/notebooks/{pair.mine}/lab"


@pytest.mark.parametrize("route", ["signed-url", "token"])
def test_another_member_gets_not_found(server: ServerProcess, pair: Pair, route: str) -> None:
    with client_for(server, project=pair.project, token=pair.bob) as api:
        method = api.post if route == "signed-url" else api.get
        assert_error(method(f"/{pair.mine}/{route}"), "ModelArts.6309")
        assert_error(method(f"/DE-{uuid.uuid4()}/{route}"), "ModelArts.6309")


def test_token_route_needs_running_and_works_on_the_proxy(
    server: ServerProcess, pair: Pair
) -> None:
    with client_for(server, project=pair.project, token=pair.alice) as api:
        assert_error(api.get(f"/{pair.stopped}/token"), "ModelArts.6327")
        token = ok(api.get(f"/{pair.mine}/token"))["token"]
    with httpx.Client() as client:
        echoed = client.get(notebook(server, pair.mine, "api/status"),
                            headers={"Authorization": f"token {token}"})
        assert echoed.status_code == 200
        upstream = echoed.json()["headers"]["authorization"]
        assert upstream.startswith("token ") and upstream != f"token {token}"
        assert upstream.split()[1] != token, "the instance's own token replaces ours"
        entered = client.get(notebook(server, pair.mine, f"lab?token={token}"))
        assert entered.status_code == 303 and client.cookies.get("demanager-notebook")


# --- who passes ------------------------------------------------------------------------


def test_http_refusal_looks_like_a_missing_instance(server: ServerProcess, pair: Pair) -> None:
    missing = f"DE-{uuid.uuid4()}"
    with httpx.Client(headers={"X-Auth-Token": pair.bob}) as client:
        refused = client.get(notebook(server, pair.mine, "api/status"))
        gone = client.get(notebook(server, missing, "api/status"))
    for response in (refused, gone):
        assert_error(response, "ModelArts.6309")
    with httpx.Client() as client:
        assert_error(client.get(notebook(server, pair.mine, "x")), "ModelArts.0201", 401)
        bogus = client.get(notebook(server, pair.mine, "x"), headers={"X-Auth-Token": "nope"})
        assert_error(bogus, "ModelArts.6620", 401)
        forged = client.get(notebook(server, pair.mine, "x?token=dmg_e30.AAAA"))
        assert_error(forged, "ModelArts.6620", 401)


def test_browser_without_credential_goes_to_sign_in(server: ServerProcess, pair: Pair) -> None:
    with httpx.Client() as client:
        response = client.get(notebook(server, pair.mine, "lab?x=1"), headers=HTML)
    assert response.status_code == 302
    assert response.headers["location"] == (
        f"/console/sign-in?next=%2Fnotebooks%2F{pair.mine}%2Flab%3Fx%3D1"
    )


def test_websocket_passes_for_the_owner_only(server: ServerProcess, pair: Pair) -> None:
    with connect(ws_url(server, pair.mine), additional_headers={"X-Auth-Token": pair.alice},
                 subprotocols=["v1.kernel.websocket.jupyter.org"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "v1.kernel.websocket.jupyter.org"
        ws.send("ping")
        assert ws.recv() == "ping"
        ws.send(b"\x00\x01")
        assert ws.recv() == b"\x00\x01"
    for headers, status in (({"X-Auth-Token": pair.bob}, 400), ({}, 401)):
        with pytest.raises(InvalidStatus) as refused:
            connect(ws_url(server, pair.mine), additional_headers=headers)
        assert refused.value.response.status_code == status
    with pytest.raises(InvalidStatus) as stopped:
        connect(ws_url(server, pair.stopped), additional_headers={"X-Auth-Token": pair.alice})
    assert stopped.value.response.status_code == 400
    assert b"ModelArts.6327" in stopped.value.response.body


def test_a_handshake_the_notebook_denies_gets_the_notebooks_answer_scrubbed(
    server: ServerProcess, pair: Pair
) -> None:
    """Jupyter answers a handshake for an unknown kernel with 404: the caller sees that,
    not a claim that the notebook is not answering, and never the upstream credential."""
    with pytest.raises(InvalidStatus) as denied:
        connect(ws_url(server, pair.mine, "api/kernels/missing/channels"),
                additional_headers={"X-Auth-Token": pair.alice})
    answer = denied.value.response
    assert answer.status_code == 404
    body = json.loads(answer.body)
    assert body["message"] == "Kernel does not exist"
    scheme, credential = body["authorization"].split()
    assert scheme == "token" and len(credential) >= 16 and set(credential) == {"*"}
    assert answer.headers["content-length"] == str(len(answer.body))


def test_a_grant_in_the_query_opens_a_websocket_too(server: ServerProcess, pair: Pair) -> None:
    with client_for(server, project=pair.project, token=pair.alice) as api:
        token = ok(api.get(f"/{pair.mine}/token"))["token"]
    with connect(ws_url(server, pair.mine, f"api/kernels/k/channels?token={token}")) as ws:
        ws.send("via query")
        assert ws.recv() == "via query"


# --- what crosses ----------------------------------------------------------------------


def test_credentials_and_hop_by_hop_headers_stay_behind(server: ServerProcess, pair: Pair) -> None:
    with httpx.Client() as browser:
        with client_for(server, project=pair.project, token=pair.alice) as api:
            browser.get(ok(api.post(f"/{pair.mine}/signed-url"))["url"])
        headers = {
            "X-Auth-Token": pair.alice,
            "Connection": "keep-alive, X-Hop",
            "X-Hop": "secret",
            "TE": "trailers",
            "Cookie": "theirs=1",
            "X-Kept": "yes",
        }
        echoed = browser.get(
            notebook(server, pair.mine, "api/a%2Fb?q=%2F&token=dmg_x&z=1"), headers=headers
        ).json()
    sent = echoed["headers"]
    for name in ("x-auth-token", "x-hop", "te"):
        assert name not in sent
    assert "demanager-notebook" not in sent.get("cookie", "")
    assert sent["x-kept"] == "yes"
    assert echoed["query"] == "q=%2F&z=1", "the path and other parameters cross unchanged"
    assert echoed["raw_path"] == f"/notebooks/{pair.mine}/api/a%2Fb"


def test_bodies_stream_both_ways(server: ServerProcess, pair: Pair) -> None:
    size = 64 * 1024 * 1024
    headers = {"X-Auth-Token": pair.alice}

    def chunks() -> Iterator[bytes]:
        block = b"z" * (1024 * 1024)
        for _ in range(size // len(block)):
            yield block

    with httpx.Client(headers=headers, timeout=120.0) as client:
        up = client.put(notebook(server, pair.mine, "api/upload"), content=chunks())
        assert up.json()["body_bytes"] == size
        got = 0
        with client.stream("GET", notebook(server, pair.mine, f"api/bytes?n={size}")) as down:
            for block in down.iter_raw():
                got += len(block)
    assert got == size


# --- pages -------------------------------------------------------------------------------


def test_not_running_page_and_json(server: ServerProcess, pair: Pair) -> None:
    with httpx.Client(headers={"X-Auth-Token": pair.alice}) as client:
        assert_error(client.get(notebook(server, pair.stopped, "api/status")), "ModelArts.6327")
        page = client.get(notebook(server, pair.stopped, "lab"), headers=HTML)
    assert page.status_code == 400 and "STOPPED" in page.text
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


@pytest.mark.parametrize("target", ["//evil.example/", "https://evil.example/",
                                    "/console", "/notebooks/x/\\evil"])
def test_sign_in_never_redirects_off_site(server: ServerProcess, target: str) -> None:
    with httpx.Client() as client:
        page = client.get(f"{server.url}/console/sign-in", params={"next": target})
        assert page.status_code == 200
        assert 'name="next" value=""' in page.text
        posted = client.post(f"{server.url}/console/sign-in",
                             data={"next": target, "project": "p", "token": server.token})
        assert posted.status_code == 400 and "location" not in posted.headers


def test_sign_in_with_a_token_sets_a_scoped_cookie(server: ServerProcess, pair: Pair) -> None:
    next_path = f"/notebooks/{pair.mine}/lab"
    with httpx.Client() as client:
        wrong = client.post(f"{server.url}/console/sign-in",
                            data={"next": next_path, "project": pair.project, "token": "nope"})
        assert wrong.status_code == 401 and "demanager-notebook" not in client.cookies
        other = client.post(f"{server.url}/console/sign-in",
                            data={"next": next_path, "project": pair.project, "token": pair.bob})
        assert other.status_code == 400 and "demanager-notebook" not in client.cookies
        good = client.post(f"{server.url}/console/sign-in",
                           data={"next": next_path, "project": pair.project,
                                 "token": pair.alice})
    assert good.status_code == 303 and good.headers["location"] == next_path
    cookie = good.headers["set-cookie"]
    assert cookie.startswith("demanager-notebook=dmg_")
    for attribute in ("HttpOnly", "SameSite=Lax", f"Path=/notebooks/{pair.mine}/"):
        assert attribute in cookie


def test_password_guesses_on_the_sign_in_page_are_limited(
    server_factory: Callable[..., ServerProcess],
) -> None:
    """The notebook sign-in page counts failed passwords against the same per-user limit
    as Keystone's sign-in; past it even the right password waits."""
    target = server_factory(env={"DEMANAGER_LOGIN_FAILURES_PER_USER": "3"})
    project = uuid.uuid4().hex
    made = subprocess.run(
        [DEMANAGER, "users", "create", "dana", "--project", project, "--password-stdin"],
        env=target.env, input="the right one\n", capture_output=True, text=True, timeout=60,
    )
    assert made.returncode == 0, made.stderr
    form = {"next": "/notebooks/DE-x/lab", "project": project, "user_name": "dana"}
    with httpx.Client() as client:
        for _ in range(3):
            wrong = client.post(f"{target.url}/console/sign-in",
                                data={**form, "password": "guess"})
            assert wrong.status_code == 401
        refused = client.post(f"{target.url}/console/sign-in",
                              data={**form, "password": "the right one"})
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        assert "Too many failed sign-ins" in refused.text
        # Keystone's sign-in shares the count.
        keystone = client.post(f"{target.url}/v3/auth/tokens", json={"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": "dana", "domain": {"name": "Default"}, "password": "the right one"}}},
            "scope": {"project": {"id": project}}}})
        assert keystone.status_code == 429
