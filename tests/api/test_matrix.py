"""Who reaches what: two projects, an admin and two members in each, every instance
route and the notebook proxy (HTTP and WebSocket) tried with every principal's token
(contract §1.3 plus roles).

Allowed: an admin on every instance of their project, a member on their own. Every
other attempt is refused, a foreign instance of one's own project exactly as a missing
one (400 ``6309``), another project's path with ``0210``; and a refused attempt changes
nothing.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.api.helpers import create, listing, ok
from tests.conftest import client_for
from tests.server import DEMANAGER, ServerProcess, wait_for_status

ROLES = (("admin", "admin"), ("m1", "member"), ("m2", "member"))


@dataclass(frozen=True)
class Person:
    key: str
    project: str
    role: str
    token: str

    def may_use(self, owner: Person) -> bool:
        return self.project == owner.project and (self.role == "admin" or self is owner)


@dataclass
class World:
    server: ServerProcess
    people: list[Person]
    instances: dict[str, str]
    """person key -> id of the instance that person created."""

    def person(self, key: str) -> Person:
        return next(p for p in self.people if p.key == key)

    def client(self, who: Person, project: str | None = None) -> httpx.Client:
        return client_for(self.server, project=project or who.project, token=who.token)


@pytest.fixture(scope="module")
def world(server: ServerProcess) -> Iterator[World]:
    people = []
    for letter in "ab":
        project = uuid.uuid4().hex
        for name, role in ROLES:
            user = f"{letter}-{name}-{uuid.uuid4().hex[:6]}"
            made = subprocess.run(
                [DEMANAGER, "users", "create", user, "--project", project, "--role", role],
                env=server.env, capture_output=True, text=True, timeout=60,
            )
            assert made.returncode == 0, made.stderr
            people.append(Person(f"{letter}-{name}", project, role,
                                 server.make_token(project, user)))
    instances = {}
    for person in people:
        with client_for(server, project=person.project, token=person.token) as client:
            instances[person.key] = create(client, name=f"nb-{person.key}")["id"]
            wait_for_status(client, instances[person.key], "RUNNING")
    yield World(server, people, instances)


def _attempts(client: httpx.Client, instance_id: str, author: str) -> dict[str, httpx.Response]:
    """Every instance route, none of which changes anything when refused; the delete
    goes last and is tried on a RUNNING instance, which the contract refuses anyway
    (6304) where the caller may reach it."""
    return {
        "get": client.get(f"/{instance_id}"),
        "update": client.put(f"/{instance_id}", json={"description": f"by {author}"}),
        "action": client.post(f"/{instance_id}/action", json={"action": "start"}),
        "token": client.get(f"/{instance_id}/token"),
        "signed-url": client.post(f"/{instance_id}/signed-url"),
        "delete": client.delete(f"/{instance_id}"),
    }


def test_every_route_with_every_principal(world: World) -> None:
    refused_same_project = 0
    for caller in world.people:
        for owner in world.people:
            instance_id = world.instances[owner.key]
            # Through the caller's own project path.
            with world.client(caller) as client:
                answers = _attempts(client, instance_id, caller.key)
            for route, response in answers.items():
                code = response.json().get("error_code")
                if caller.may_use(owner):
                    assert code != "ModelArts.6309", (caller.key, owner.key, route)
                    assert response.status_code in (200, 400), (route, response.text)
                else:
                    assert (response.status_code, code) == (400, "ModelArts.6309"), (
                        caller.key, owner.key, route, response.text)
                    refused_same_project += caller.project == owner.project
            # Through the owner's project path, with a token of another project.
            if caller.project != owner.project:
                with world.client(caller, project=owner.project) as client:
                    for route, response in _attempts(client, instance_id, caller.key).items():
                        assert (response.status_code, response.json()["error_code"]) == (
                            403, "ModelArts.0210"), (caller.key, owner.key, route)
    # a- and b-projects: each member is refused on the other member's and the admin's.
    assert refused_same_project == 2 * 2 * 2 * 6
    # Nothing a refused attempt touched changed: each instance is still RUNNING, and the
    # last description written is one only its owner or their admin could write.
    for owner in world.people:
        with client_for(world.server, project=owner.project) as operator:
            body = ok(operator.get(f"/{world.instances[owner.key]}"))
        assert body["status"] == "RUNNING"
        author = world.person(body["description"].removeprefix("by "))
        assert author.may_use(owner), (owner.key, author.key)


def test_listings_show_exactly_what_each_may_use(world: World) -> None:
    for caller in world.people:
        expected = {world.instances[o.key] for o in world.people if caller.may_use(o)}
        with world.client(caller) as client:
            for show_self in ("true", "false"):
                seen = {i["id"] for i in listing(client, show_self=show_self)["instances"]}
                if show_self == "true":
                    assert seen == {world.instances[caller.key]}
                else:
                    assert seen == expected, caller.key


def test_a_revoked_token_stops_at_once(world: World) -> None:
    """On the API and on the proxy alike, the next request after the revocation fails."""
    project = world.people[0].project
    user = f"short-{uuid.uuid4().hex[:6]}"
    token = world.server.make_token(project, user)
    with client_for(world.server, project=project, token=token) as client:
        mine = create(client, name=f"nb-{user}")["id"]
        wait_for_status(client, mine, "RUNNING")
        proxied = f"{world.server.url}/notebooks/{mine}/api/status"
        assert httpx.get(proxied, headers={"X-Auth-Token": token}).status_code == 200
        assert world.server.cli("tokens", "revoke", token).returncode == 0
        refused = client.get("", params={"de_type": "Notebook"})
        assert (refused.status_code, refused.json()["error_code"]) == (401, "ModelArts.6620")
        at_proxy = httpx.get(proxied, headers={"X-Auth-Token": token})
        assert (at_proxy.status_code, at_proxy.json()["error_code"]) == (401, "ModelArts.6620")


def _proxied_get(world: World, who: Person, instance_id: str) -> httpx.Response:
    url = f"{world.server.url}/notebooks/{instance_id}/api/status"
    return httpx.get(url, headers={"X-Auth-Token": who.token}, timeout=30)


def _websocket_answer(world: World, who: Person, instance_id: str) -> int:
    """101 and an echoed message when the upgrade passes, else the refusal's status."""
    url = f"ws://127.0.0.1:{world.server.port}/notebooks/{instance_id}/api/kernels/k/channels"
    try:
        with connect(url, additional_headers={"X-Auth-Token": who.token}) as ws:
            ws.send("ping")
            assert ws.recv(timeout=30) == "ping"
            return 101
    except InvalidStatus as refused:
        return int(refused.response.status_code)


def test_the_proxy_with_every_principal(world: World) -> None:
    """HTTP and the WebSocket upgrade through ``/notebooks/{id}/``: only those who may
    use the instance pass; everyone else gets the missing instance's answer."""
    for caller in world.people:
        for owner in world.people:
            instance_id = world.instances[owner.key]
            response = _proxied_get(world, caller, instance_id)
            upgrade = _websocket_answer(world, caller, instance_id)
            if caller.may_use(owner):
                assert response.status_code == 200, (caller.key, owner.key, response.text)
                assert upgrade == 101, (caller.key, owner.key)
            else:
                assert (response.status_code, response.json()["error_code"]) == (
                    400, "ModelArts.6309"), (caller.key, owner.key)
                assert upgrade == 400, (caller.key, owner.key)


def test_a_signed_link_opens_only_its_own_instance(world: World) -> None:
    owner = world.person("a-m1")
    with world.client(owner) as client:
        link = ok(client.post(f"/{world.instances[owner.key]}/signed-url"))["url"]
    token = link.split("token=", 1)[1]
    with httpx.Client(timeout=30, follow_redirects=True) as browser:
        # The link sets the notebook's session cookie and lands on the clean address.
        landed = browser.get(link)
        assert landed.status_code == 200 and "token=" not in str(landed.url)
        other = world.instances["a-m2"]
        stolen = browser.get(f"{world.server.url}/notebooks/{other}/api/status",
                             params={"token": token})
        assert (stolen.status_code, stolen.json()["error_code"]) == (401, "ModelArts.6620")
