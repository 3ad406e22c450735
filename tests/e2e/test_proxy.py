"""The notebook proxy end to end: real JupyterLab servers (process backend), reached
only through ``/notebooks/{id}/`` on the demanager server.

Who is who: ``alice`` (member, password) owns ``mine``; ``bob`` (member, token) owns
``theirs``; ``carol`` is an admin of the project; ``eve`` is a member of another
project. The instances are shared by the tests of this module.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import psutil
import pytest
import websocket

from tests.conftest import MINIMAL_BODY
from tests.e2e.jupyter import Notebook, _execute_request
from tests.server import DEMANAGER, ServerProcess, traversable_dir, wait_for_status

pytestmark = pytest.mark.slow

EVS_BODY: dict[str, Any] = {k: v for k, v in MINIMAL_BODY.items() if k != "name"}
PASSWORD = "correct horse battery staple"
LINK_TTL = 3
HTML = {"Accept": "text/html,application/xhtml+xml"}


@dataclass
class World:
    server: ServerProcess
    project: str
    alice: str
    bob: str
    carol: str
    eve: str
    mine: str
    theirs: str

    def url(self, instance_id: str, tail: str = "") -> str:
        return f"{self.server.url}/notebooks/{instance_id}/{tail}"

    def api(self, token: str) -> httpx.Client:
        return self.server.client(token, self.project)


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    # Instance uids (the server runs as root in CI) must reach their volumes below it.
    root = traversable_dir("demanager-proxy-")
    server = ServerProcess(
        root / "data", backend="process", env={"DEMANAGER_LINK_TTL_SECONDS": str(LINK_TTL)},
    ).start()
    try:
        project = uuid.uuid4().hex
        created = subprocess.run(
            [DEMANAGER, "users", "create", "alice", "--project", project, "--password-stdin"],
            env=server.env, input=PASSWORD + "\n", capture_output=True, text=True, timeout=60,
        )
        assert created.returncode == 0, created.stderr
        assert server.cli("users", "create", "carol", "--project", project,
                          "--role", "admin").returncode == 0
        alice = server.make_token(project, "alice")
        bob = server.make_token(project, "bob")
        carol = server.make_token(project, "carol")
        eve = server.make_token(uuid.uuid4().hex, "eve")
        with server.client(alice, project) as api:
            mine = api.post("", json={**EVS_BODY, "name": "mine"}).json()["id"]
        with server.client(bob, project) as api:
            theirs = api.post("", json={**EVS_BODY, "name": "theirs"}).json()["id"]
        with server.client(None, project) as api:
            for instance_id in (mine, theirs):
                wait_for_status(api, instance_id, "RUNNING")
        yield World(server, project, alice, bob, carol, eve, mine, theirs)
    finally:
        server.close()
        shutil.rmtree(root, ignore_errors=True)


def jupyter_token(world: World, instance_id: str) -> str:
    record = json.loads(
        (world.server.data_dir / "runtime" / instance_id / "server.json").read_text()
    )
    return str(record["token"])


def sign_in(browser: httpx.Client, world: World, instance_id: str, **form: str) -> httpx.Response:
    """Open the notebook as a browser without a credential, sign in on the form, land."""
    first = browser.get(world.url(instance_id, "lab"), headers=HTML)
    assert first.status_code == 302
    assert first.headers["location"].startswith("/console/sign-in?next=")
    page = browser.get(first.headers["location"], headers=HTML)
    assert page.status_code == 200 and 'action="/console/sign-in"' in page.text
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"
    fields = {"project": world.project, "next": f"/notebooks/{instance_id}/lab", **form}
    return browser.post("/console/sign-in", data=fields, headers=HTML)


def test_browser_signs_in_uses_jupyterlab_files_and_kernels(world: World) -> None:
    with httpx.Client(base_url=world.server.url, timeout=60.0) as browser:
        signed = sign_in(browser, world, world.mine, user_name="alice", password=PASSWORD)
        assert signed.status_code == 303, signed.text
        assert signed.headers["location"] == f"/notebooks/{world.mine}/lab"
        cookie = signed.headers["set-cookie"]
        for attribute in ("HttpOnly", "SameSite=Lax", f"Path=/notebooks/{world.mine}/"):
            assert attribute in cookie
        lab = browser.get(signed.headers["location"], headers=HTML)
        assert lab.status_code == 200 and "JupyterLab" in lab.text
        assert jupyter_token(world, world.mine) not in lab.text, "Jupyter's token stays inside"

        # The contents API and a kernel over the proxied WebSocket, with the cookie alone.
        saved = browser.put(f"/notebooks/{world.mine}/api/contents/hello.txt",
                            json={"type": "file", "format": "text", "content": "hi"})
        assert saved.status_code in (200, 201), saved.text
        kernel = browser.post(f"/notebooks/{world.mine}/api/kernels", json={"name": "python3"})
        assert kernel.status_code == 201, kernel.text
        session_cookie = browser.cookies.get("demanager-notebook")
        ws = websocket.create_connection(
            f"ws://127.0.0.1:{world.server.port}/notebooks/{world.mine}/api/kernels/"
            f"{kernel.json()['id']}/channels",
            header=[f"Cookie: demanager-notebook={session_cookie}"],
            origin=world.server.url, timeout=60,
        )
        try:
            assert _run(ws, "open('hello.txt').read() * 2") == "'hihi'"
        finally:
            ws.close()


def _run(ws: websocket.WebSocket, code: str) -> str:
    msg_id = uuid.uuid4().hex
    ws.send(json.dumps(_execute_request(msg_id, code)))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        message = json.loads(ws.recv())
        if message.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        if message["msg_type"] == "execute_result":
            return str(message["content"]["data"]["text/plain"])
        if message["msg_type"] == "error":
            raise AssertionError(message["content"])
    raise AssertionError("no result")


def test_a_wrong_password_shows_the_form_again(world: World) -> None:
    with httpx.Client(base_url=world.server.url, timeout=30.0) as browser:
        failed = sign_in(browser, world, world.mine, user_name="alice", password="wrong")
        assert failed.status_code == 401 and "Sign-in failed" in failed.text
        assert "demanager-notebook" not in browser.cookies


def test_a_cross_site_websocket_riding_on_the_cookie_is_refused(world: World) -> None:
    with httpx.Client(base_url=world.server.url, timeout=60.0) as browser:
        assert sign_in(browser, world, world.mine, token=world.alice).status_code == 303
        cookie = browser.cookies.get("demanager-notebook")
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(
            f"ws://127.0.0.1:{world.server.port}/notebooks/{world.mine}/api/events/subscribe",
            header=[f"Cookie: demanager-notebook={cookie}"], origin="https://evil.example",
        )
    assert refused.value.status_code == 400


MB = 1024 * 1024
PIECE = 3 * 256 * 1024
"""Raw bytes per generated piece: a multiple of 3, so pieces base64-encode independently."""
PIECES_PER_CHUNK = 64
CHUNKS = 11
TOTAL = PIECE * PIECES_PER_CHUNK * CHUNKS  # 528 MB
RSS_BOUND = 50 * MB


class PeakRss:
    """Samples a process's resident memory in a thread; ``peak`` is the highest seen."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _chunk_body(rng: random.Random, number: int, digest: Any) -> Iterator[bytes]:
    """One chunk of Jupyter's chunked upload as a JSON body, generated as it is sent."""
    yield json.dumps({"type": "file", "format": "base64", "chunk": number})[:-1].encode()
    yield b', "content": "'
    for _ in range(PIECES_PER_CHUNK):
        piece = rng.randbytes(PIECE)
        digest.update(piece)
        yield base64.b64encode(piece)
    yield b'"}'


def test_half_a_gigabyte_up_and_down_without_growing_the_server(world: World) -> None:
    assert world.server.proc is not None
    headers = {"X-Auth-Token": world.alice}
    path = "api/contents/big.bin"
    with httpx.Client(headers=headers, timeout=300.0) as client:
        # Warm up the route (pools, caches) before the baseline.
        client.put(world.url(world.mine, path), json={"type": "file", "format": "text",
                                                      "content": "x"}).raise_for_status()
        baseline = psutil.Process(world.server.proc.pid).memory_info().rss
        rng, sent = random.Random(7), hashlib.sha256()
        with PeakRss(world.server.proc.pid) as upload:
            for index in range(CHUNKS):
                number = -1 if index == CHUNKS - 1 else index + 1
                response = client.put(world.url(world.mine, path),
                                      content=_chunk_body(rng, number, sent))
                assert response.status_code in (200, 201), response.text
        listed = client.get(world.url(world.mine, path), params={"content": "0"}).json()
        assert listed["size"] == TOTAL

        received, size = hashlib.sha256(), 0
        with PeakRss(world.server.proc.pid) as download, client.stream(
            "GET", world.url(world.mine, "files/big.bin")
        ) as response:
            assert response.status_code == 200
            for block in response.iter_bytes():
                received.update(block)
                size += len(block)
    assert (size, received.hexdigest()) == (TOTAL, sent.hexdigest())
    grew_up, grew_down = upload.peak - baseline, download.peak - baseline
    print(f"server RSS growth: upload {grew_up / MB:.1f} MB, download {grew_down / MB:.1f} MB "
          f"for {TOTAL / MB:.0f} MB each way")
    assert grew_up < RSS_BOUND, f"upload grew the server by {grew_up / MB:.1f} MB"
    assert grew_down < RSS_BOUND, f"download grew the server by {grew_down / MB:.1f} MB"


def _refused_like_missing(response: httpx.Response) -> None:
    assert response.status_code == 400, response.text
    assert response.json()["error_code"] == "ModelArts.6309"


def test_only_callers_who_may_use_the_instance_pass(world: World) -> None:
    missing = f"DE-{uuid.uuid4()}"
    for token in (world.bob, world.eve, world.server.token):
        with httpx.Client(headers={"X-Auth-Token": token}, timeout=30.0) as client:
            gone = client.get(world.url(missing, "api/status"))
            _refused_like_missing(gone)
            if token != world.server.token:
                refused = client.get(world.url(world.mine, "api/status"))
                _refused_like_missing(refused)
                assert set(refused.json()) == set(gone.json())
    for token in (world.alice, world.carol, world.server.token):  # owner, admin, operator
        with Notebook(world.url(world.mine), token) as notebook:
            assert notebook.status() == 200


@pytest.mark.parametrize("who", ["bob", "eve"])
def test_the_websocket_upgrade_is_checked_too(world: World, who: str) -> None:
    with Notebook(world.url(world.mine), world.alice) as notebook:
        kernel = notebook.http.post("api/kernels", json={"name": "python3"}).json()["id"]
    url = f"ws://127.0.0.1:{world.server.port}/notebooks/{world.mine}/api/kernels/{kernel}/channels"
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(url, header=[f"X-Auth-Token: {getattr(world, who)}"])
    assert refused.value.status_code == 400
    assert json.loads(refused.value.resp_body or b"{}")["error_code"] == "ModelArts.6309"
    with pytest.raises(websocket.WebSocketBadStatusException) as anonymous:
        websocket.create_connection(url)
    assert anonymous.value.status_code == 401


def test_a_kernel_jupyter_does_not_know_gets_jupyters_own_404(world: World) -> None:
    """The notebook answered: the caller sees its answer, not the proxy's "not answering"."""
    unknown = uuid.uuid4()
    url = f"ws://127.0.0.1:{world.server.port}/notebooks/{world.mine}/api/kernels/{unknown}/channels"
    with pytest.raises(websocket.WebSocketBadStatusException) as denied:
        websocket.create_connection(url, header=[f"X-Auth-Token: {world.alice}"])
    assert denied.value.status_code == 404
    assert b"ModelArts" not in (denied.value.resp_body or b"")


def test_revoked_and_expired_tokens_stop_at_once(world: World) -> None:
    token = world.server.make_token(world.project, "alice")
    short = world.server.make_token(world.project, "alice", "--expires-in", "2")
    with httpx.Client(base_url=world.server.url, timeout=30.0) as browser:
        assert sign_in(browser, world, world.mine, token=token).status_code == 303
        assert browser.get(f"/notebooks/{world.mine}/api/status").status_code == 200
        with Notebook(world.url(world.mine), token) as notebook:
            assert notebook.status() == 200
            assert world.server.cli("tokens", "revoke", token).returncode == 0
            assert notebook.refusal() == "ModelArts.6620"
        # The cookie was made from the token: it ends with it.
        again = browser.get(f"/notebooks/{world.mine}/lab", headers=HTML)
        assert again.status_code == 302 and "reason=invalid" in again.headers["location"]
    with Notebook(world.url(world.mine), short) as notebook:
        deadline = time.monotonic() + 10
        while notebook.status() == 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert notebook.refusal() == "ModelArts.0202"


def test_a_signed_link_opens_its_instance_until_it_expires(world: World) -> None:
    with world.api(world.alice) as api:
        link = api.post(f"/{world.mine}/signed-url").json()
        assert bob_cannot_sign(world)
    url: str = link["url"]
    assert url.startswith(world.url(world.mine, "lab?token=dmg_"))
    with httpx.Client(timeout=30.0) as browser:
        entered = browser.get(url, headers=HTML)
        assert entered.status_code == 303
        assert entered.headers["location"] == f"/notebooks/{world.mine}/lab"
        lab = browser.get(world.url(world.mine, "lab"), headers=HTML)
        assert lab.status_code == 200 and "JupyterLab" in lab.text
    other = url.replace(world.mine, world.theirs)
    with httpx.Client(timeout=30.0) as browser:
        wrong = browser.get(other)
        assert (wrong.status_code, wrong.json()["error_code"]) == (401, "ModelArts.6620")
    time.sleep(max(0.0, link["expires_at"] / 1000 - time.time()) + 0.3)
    with httpx.Client(timeout=30.0) as browser:
        late = browser.get(url, headers=HTML)
        assert late.status_code == 302 and "reason=expired" in late.headers["location"]
        assert browser.get(url).json()["error_code"] == "ModelArts.0202"


def bob_cannot_sign(world: World) -> bool:
    with world.api(world.bob) as api:
        refused = api.post(f"/{world.mine}/signed-url")
    return refused.status_code == 400 and refused.json()["error_code"] == "ModelArts.6309"


def test_the_token_route_gives_a_credential_for_the_proxy(world: World) -> None:
    with world.api(world.alice) as api:
        token = api.get(f"/{world.mine}/token").json()["token"]
    assert token != jupyter_token(world, world.mine)
    with httpx.Client(timeout=30.0) as client:
        status = client.get(world.url(world.mine, "api/status"),
                            headers={"Authorization": f"token {token}"})
        assert status.status_code == 200 and "started" in status.json()
        entered = client.get(world.url(world.mine, f"lab?token={token}"))
        assert entered.status_code == 303 and "demanager-notebook" in client.cookies


def test_not_running_gives_a_page_or_the_contract_error(world: World) -> None:
    with world.api(world.bob) as api:
        api.post(f"/{world.theirs}/action", json={"action": "stop"})
        wait_for_status(api, world.theirs, "STOPPED")
        assert api.get(f"/{world.theirs}").json()["spec"]["annotations"]["url"] == ""
    with httpx.Client(headers={"X-Auth-Token": world.bob}, timeout=30.0) as client:
        as_json = client.get(world.url(world.theirs, "api/status"))
        assert (as_json.status_code, as_json.json()["error_code"]) == (400, "ModelArts.6327")
        page = client.get(world.url(world.theirs, "lab"), headers=HTML)
        assert page.status_code == 400 and "not running" in page.text
        assert page.headers["content-type"].startswith("text/html")
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["referrer-policy"] == "no-referrer"
