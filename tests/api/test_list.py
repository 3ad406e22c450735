"""List: every parameter of contract §6.1 and the semantics of §6.2.

One project is populated once (three users, two workspaces, a pool, an AI
project, a failed, a stopped and a deleted instance); the tests only read it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.api.helpers import (
    DEDICATED_POOL,
    FAILING_PROFILE,
    act,
    assert_error,
    create,
    listing,
    ok,
    remove,
)
from tests.api.test_get import assert_instance_shape
from tests.conftest import client_for
from tests.server import ServerProcess, wait_for_status

OPERATOR_WS0 = ["B", "a", "_x", "-y", "0z", "aip", "pooled", "failing", "stopped"]


@dataclass
class World:
    project: str
    operator: httpx.Client
    alice: httpx.Client
    bob: httpx.Client
    ids: dict[str, str]


@pytest.fixture(scope="module")
def world(server: ServerProcess) -> Iterator[World]:
    project = uuid.uuid4().hex
    suffix = uuid.uuid4().hex[:8]
    alice_token = server.make_token(project, f"alice-{suffix}")
    bob_token = server.make_token(project, f"bob-{suffix}")
    with (
        client_for(server, project=project) as operator,
        client_for(server, project=project, token=alice_token) as alice,
        client_for(server, project=project, token=bob_token) as bob,
    ):
        ids: dict[str, str] = {}
        for name in ["B", "a", "_x", "-y", "0z", "stopped", "gone"]:
            ids[name] = create(operator, name=name)["id"]
        ids["aip"] = create(operator, name="aip", ai_project={"id": "proj-x"})["id"]
        ids["pooled"] = create(operator, name="pooled", pool={"id": DEDICATED_POOL})["id"]
        ids["failing"] = create(operator, name="failing", profile_id=FAILING_PROFILE)["id"]
        ids["ws1"] = create(operator, name="ws1", workspace={"id": "ws-analytics"})["id"]
        ids["alice1"] = create(alice, name="alice1")["id"]
        ids["alice2"] = create(alice, name="alice2")["id"]
        ids["bob1"] = create(bob, name="bob1")["id"]
        for name, instance_id in ids.items():
            wait_for_status(operator, instance_id,
                            "CREATE_FAILED" if name == "failing" else "RUNNING", timeout=30)
        ok(act(operator, ids["stopped"], "stop"))
        wait_for_status(operator, ids["stopped"], "STOPPED", timeout=30)
        remove(operator, ids["gone"])
        yield World(project, operator, alice, bob, ids)


def names(body: dict[str, Any]) -> list[str]:
    return [i["name"] for i in body["instances"]]


# --- filters ---------------------------------------------------------------------------

FILTERS = [
    pytest.param({}, sorted(OPERATOR_WS0), id="default"),
    pytest.param({"show_self": "true"}, sorted(OPERATOR_WS0), id="show_self-true"),
    pytest.param({"show_self": "TRUE"}, sorted(OPERATOR_WS0), id="show_self-TRUE"),
    pytest.param({"show_self": "True"}, sorted(OPERATOR_WS0), id="show_self-True"),
    pytest.param({"show_self": "false"}, sorted([*OPERATOR_WS0, "alice1", "alice2", "bob1"]),
                 id="show_self-false"),
    pytest.param({"show_self": "FALSE"}, sorted([*OPERATOR_WS0, "alice1", "alice2", "bob1"]),
                 id="show_self-FALSE"),
    pytest.param({"provision_type": "Docker"}, sorted(OPERATOR_WS0), id="provision_type"),
    pytest.param({"status": "RUNNING"}, sorted(["B", "a", "_x", "-y", "0z", "aip", "pooled"]),
                 id="status-RUNNING"),
    pytest.param({"status": "STOPPED"}, ["stopped"], id="status-STOPPED"),
    pytest.param({"status": "CREATE_FAILED"}, ["failing"], id="status-CREATE_FAILED"),
    pytest.param({"status": "DELETED"}, ["gone"], id="status-DELETED"),
    pytest.param({"status": "STARTING"}, [], id="status-none-match"),
    pytest.param({"workspace_id": "0"}, sorted(OPERATOR_WS0), id="workspace-0"),
    pytest.param({"workspace_id": "ws-analytics"}, ["ws1"], id="workspace-other"),
    pytest.param({"ai_project": "proj-x"}, ["aip"], id="ai_project"),
    pytest.param({"ai_project": "default-ai-project"},
                 sorted(set(OPERATOR_WS0) - {"aip"}), id="ai_project-default"),
    pytest.param({"ai_project": "nope"}, [], id="ai_project-none"),
    pytest.param({"pool_id": DEDICATED_POOL}, ["pooled"], id="pool_id"),
    pytest.param({"pool_id": "nope"}, [], id="pool_id-none"),
    pytest.param({"status": "RUNNING", "ai_project": "proj-x"}, ["aip"], id="and-1"),
    pytest.param({"status": "STOPPED", "ai_project": "proj-x"}, [], id="and-2"),
    pytest.param({"show_self": "false", "pool_id": DEDICATED_POOL, "status": "RUNNING"},
                 ["pooled"], id="and-3"),
    pytest.param({"unknown": "x", "page": "9"}, sorted(OPERATOR_WS0), id="unknown-ignored"),
]


@pytest.mark.parametrize(("params", "expected"), FILTERS)
def test_filters(world: World, params: dict[str, str], expected: list[str]) -> None:
    body = listing(world.operator, **params)
    assert set(body) == {"total_count", "instances"}
    assert names(body) == expected
    assert body["total_count"] == len(expected)


def test_show_self_follows_the_caller(world: World) -> None:
    assert names(listing(world.alice)) == ["alice1", "alice2"]
    assert names(listing(world.alice, show_self="True")) == ["alice1", "alice2"]
    assert names(listing(world.bob)) == ["bob1"]
    # A member's show_self=false still lists only their own; an admin's lists everything.
    assert names(listing(world.bob, show_self="false")) == ["bob1"]
    everyone = listing(world.operator, show_self="false")
    assert everyone["total_count"] == len(OPERATOR_WS0) + 3


def test_a_member_cannot_read_another_members_instance(world: World) -> None:
    assert_error(world.bob.get(f"/{world.ids['alice1']}"), "ModelArts.6309")
    assert ok(world.alice.get(f"/{world.ids['alice1']}"))["name"] == "alice1"


def test_user_object_is_the_creator(world: World) -> None:
    users = {i["name"]: i["user"] for i in listing(world.operator, show_self="false")["instances"]}
    assert users["alice1"] == users["alice2"] != users["bob1"] != users["a"]
    for user in users.values():
        assert len(user["id"]) == 32 and int(user["id"], 16) >= 0


def test_deleted_tombstone_shows_only_with_the_status_filter(world: World) -> None:
    assert "gone" not in names(listing(world.operator, show_self="false"))
    tomb = listing(world.operator, status="DELETED")["instances"][0]
    assert tomb["status"] == "DELETED"
    assert tomb["id"] == world.ids["gone"]
    assert_error(world.operator.get(f"/{world.ids['gone']}"), "ModelArts.6309")


def test_elements_are_full_instances(world: World) -> None:
    body = listing(world.operator, show_self="false")
    for element in body["instances"]:
        assert_instance_shape(element)
        assert element == ok(world.operator.get(f"/{element['id']}"))


# --- sorting ----------------------------------------------------------------------------


def test_name_order_is_code_point_order(world: World) -> None:
    # "-" < "0" < "B" < "_" < "a": code points, not a locale collation or case folding
    assert names(listing(world.operator))[:5] == ["-y", "0z", "B", "_x", "a"]
    assert names(listing(world.operator, sortby="name", order="asc"))[:5] == [
        "-y", "0z", "B", "_x", "a"]
    assert names(listing(world.operator, order="desc")) == sorted(OPERATOR_WS0, reverse=True)


@pytest.mark.parametrize("order", ["asc", "desc"])
def test_creation_timestamp_order(world: World, order: str) -> None:
    body = listing(world.operator, show_self="false", sortby="creation_timestamp", order=order)
    keys = [(int(i["creation_timestamp"]), i["id"]) for i in body["instances"]]
    assert len(keys) == len(OPERATOR_WS0) + 3
    if order == "asc":
        assert keys == sorted(keys)
    else:
        # newest first; equal timestamps keep id ascending
        assert keys == sorted(keys, key=lambda k: (-k[0], k[1]))


def test_order_is_stable_across_calls(world: World) -> None:
    first = [i["id"] for i in listing(world.operator, show_self="false")["instances"]]
    for _ in range(3):
        assert [i["id"] for i in listing(world.operator, show_self="false")["instances"]] == first


def test_name_ties_break_on_creation_then_id(api: httpx.Client) -> None:
    gone = []
    for _ in range(3):
        created = create(api, name="dup")
        remove(api, created["id"])
        gone.append((int(created["creation_timestamp"]), created["id"]))
    for order in ("asc", "desc"):
        body = listing(api, status="DELETED", order=order)
        assert [(int(i["creation_timestamp"]), i["id"]) for i in body["instances"]] == sorted(gone)


# --- paging -----------------------------------------------------------------------------

ALL = sorted([*OPERATOR_WS0, "alice1", "alice2", "bob1"])

PAGES = [
    pytest.param({}, ALL, id="no-paging"),
    pytest.param({"limit": "0"}, ALL, id="limit-0-all"),
    pytest.param({"limit": "3"}, ALL[:3], id="limit-3"),
    pytest.param({"offset": "0", "limit": "3"}, ALL[:3], id="offset-0"),
    pytest.param({"offset": "3", "limit": "3"}, ALL[3:6], id="page-2"),
    pytest.param({"offset": "10", "limit": "3"}, ALL[10:], id="last-partial"),
    pytest.param({"offset": "5"}, ALL[5:], id="offset-only"),
    pytest.param({"offset": "5", "limit": "0"}, ALL[5:], id="offset-limit-0"),
    pytest.param({"offset": str(len(ALL))}, [], id="offset-at-end"),
    pytest.param({"offset": "1000", "limit": "10"}, [], id="offset-past-end"),
    pytest.param({"limit": "1000"}, ALL, id="limit-large"),
    pytest.param({"offset": "+2", "limit": "1"}, ALL[2:3], id="plus-sign"),
    pytest.param({"offset": "002", "limit": "01"}, ALL[2:3], id="leading-zeros"),
    pytest.param({"offset": "1", "limit": "2", "order": "desc"}, ALL[::-1][1:3], id="desc"),
    pytest.param({"offset": "-0"}, ALL, id="minus-zero"),
    pytest.param({"offset": "9" * 5000}, [], id="offset-huge"),
    pytest.param({"limit": "9" * 5000}, ALL, id="limit-huge"),
    pytest.param({"offset": "0" * 50 + "1", "limit": "1"}, ALL[1:2], id="many-zeros"),
]


@pytest.mark.parametrize(("params", "expected"), PAGES)
def test_paging(world: World, params: dict[str, str], expected: list[str]) -> None:
    body = listing(world.operator, show_self="false", **params)
    assert names(body) == expected
    assert body["total_count"] == len(ALL)  # counted before offset/limit


def test_repeated_parameter_first_value_counts(world: World) -> None:
    def query(*pairs: tuple[str, str]) -> httpx.Response:
        return world.operator.get("", params=[("de_type", "Notebook"), *pairs])

    assert names(ok(query(("limit", "1"), ("limit", "5")))) == [sorted(OPERATOR_WS0)[0]]
    assert ok(query(("status", "STOPPED"), ("status", "RUNNING")))["total_count"] == 1
    assert_error(query(("order", "up"), ("order", "asc")), "ModelArts.6336")
    assert ok(world.operator.get("", params=[("de_type", "Notebook"), ("de_type", "x")]))
    assert_error(world.operator.get("", params=[("de_type", "x"), ("de_type", "Notebook")]),
                 "ModelArts.6336")


# --- bad parameters -----------------------------------------------------------------------

BAD = [
    pytest.param({"de_type": None}, "6335", id="de_type-missing"),
    pytest.param({"de_type": ""}, "6335", id="de_type-empty"),
    pytest.param({"de_type": "notebook"}, "6336", id="de_type-lowercase"),
    pytest.param({"de_type": "NOTEBOOK"}, "6336", id="de_type-uppercase"),
    pytest.param({"de_type": "Notebook "}, "6336", id="de_type-space"),
    pytest.param({"de_type": "Workflow"}, "6336", id="de_type-other"),
    pytest.param({"provision_type": "docker"}, "6336", id="provision_type-case"),
    pytest.param({"provision_type": "K8s"}, "6336", id="provision_type-other"),
    pytest.param({"provision_type": ""}, "6336", id="provision_type-empty"),
    pytest.param({"status": "running"}, "6336", id="status-case"),
    pytest.param({"status": "ACTIVE"}, "6336", id="status-foreign"),
    pytest.param({"status": "DELETING"}, "6336", id="status-newer-api"),
    pytest.param({"status": ""}, "6336", id="status-empty"),
    pytest.param({"sortby": "id"}, "6303", id="sortby-id"),
    pytest.param({"sortby": "Name"}, "6303", id="sortby-case"),
    pytest.param({"sortby": "status"}, "6303", id="sortby-status"),
    pytest.param({"sortby": ""}, "6303", id="sortby-empty"),
    pytest.param({"order": "ASC"}, "6336", id="order-case"),
    pytest.param({"order": "up"}, "6336", id="order-other"),
    pytest.param({"order": ""}, "6336", id="order-empty"),
    pytest.param({"offset": "x"}, "6332", id="offset-text"),
    pytest.param({"offset": "1.5"}, "6332", id="offset-float"),
    pytest.param({"offset": "1e2"}, "6332", id="offset-exp"),
    pytest.param({"offset": ""}, "6332", id="offset-empty"),
    pytest.param({"offset": " 1"}, "6332", id="offset-space"),
    pytest.param({"offset": "١"}, "6332", id="offset-arabic-digit"),
    pytest.param({"offset": "-1"}, "6336", id="offset-negative"),
    pytest.param({"limit": "ten"}, "6332", id="limit-text"),
    pytest.param({"limit": "2.0"}, "6332", id="limit-float"),
    pytest.param({"limit": "true"}, "6332", id="limit-bool"),
    pytest.param({"limit": "-5"}, "6336", id="limit-negative"),
    pytest.param({"limit": "-" + "9" * 5000}, "6336", id="limit-negative-huge"),
    pytest.param({"workspace_id": "nope"}, "0102", id="workspace-unknown"),
    pytest.param({"workspace_id": ""}, "0102", id="workspace-empty"),
    pytest.param({"show_self": "yes"}, "6336", id="show_self-yes"),
    pytest.param({"show_self": "1"}, "6336", id="show_self-1"),
    pytest.param({"show_self": ""}, "6336", id="show_self-empty"),
]


@pytest.mark.parametrize(("params", "code"), BAD)
def test_bad_parameters(api: httpx.Client, params: dict[str, str | None], code: str) -> None:
    query = {k: v for k, v in {"de_type": "Notebook", **params}.items() if v is not None}
    assert_error(api.get("", params=query), f"ModelArts.{code}")


def test_empty_project_lists_nothing(api: httpx.Client) -> None:
    assert listing(api) == {"total_count": 0, "instances": []}
