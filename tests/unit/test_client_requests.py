"""What each SDK method puts on the wire, and how ``iter_instances`` pages."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from demanager.client import (
    AutoStopRequest,
    Client,
    Location,
    Storage,
)
from tests.unit.sdk_fakes import PROJECT, mock_async_client, mock_client, wire_instance

BASE = f"/v1/{PROJECT}/demanager"


class Recorder:
    """A MockTransport handler that records requests and answers from a function."""

    def __init__(self, answer: Callable[[httpx.Request], httpx.Response]) -> None:
        self.requests: list[httpx.Request] = []
        self._answer = answer

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self._answer(request)

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]

    def body(self, index: int = -1) -> Any:
        return json.loads(self.requests[index].content)


def instance_answer(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json=wire_instance())


@pytest.fixture
def recorder() -> Recorder:
    return Recorder(instance_answer)


@pytest.fixture
def dm(recorder: Recorder) -> Client:
    return Client(
        "http://dm.test",
        project=PROJECT,
        token="tok-1",
        transport=httpx.MockTransport(recorder),
    )


def test_headers(dm: Client, recorder: Recorder) -> None:
    dm.get("DE-1")
    assert recorder.last.headers["X-Auth-Token"] == "tok-1"
    assert recorder.last.headers["Accept"] == "application/json"
    assert recorder.last.headers["User-Agent"].startswith("demanager-sdk/")


def test_create_minimal_defaults_to_evs(dm: Client, recorder: Recorder) -> None:
    created = dm.create("nb", profile_id="P", flavor="F")
    assert created.id.startswith("DE-")
    assert (recorder.last.method, recorder.last.url.path) == (
        "POST",
        f"{BASE}/instances",
    )
    assert recorder.body() == {
        "name": "nb",
        "profile_id": "P",
        "flavor": "F",
        "spec": {"storage": {"type": "evs"}},
    }


def test_create_full(dm: Client, recorder: Recorder) -> None:
    dm.create(
        "nb",
        profile_id="P",
        flavor="F",
        storage=Storage(type="evs", location=Location(volume_size=10)),
        description="hello",
        auto_stop=7200,
        annotations={"team": "a"},
        workspace_id="0",
        pool_id="pool-1",
        ai_project="ai",
    )
    assert recorder.body() == {
        "name": "nb",
        "profile_id": "P",
        "flavor": "F",
        "description": "hello",
        "spec": {
            "storage": {"type": "evs", "location": {"volume_size": 10}},
            "auto_stop": {"enable": True, "duration": 7200},
            "annotations": {"team": "a"},
        },
        "workspace": {"id": "0"},
        "pool": {"id": "pool-1"},
        "ai_project": {"id": "ai"},
    }


def test_auto_stop_rejects_a_bool(dm: Client) -> None:
    with pytest.raises(TypeError):
        dm.create("nb", profile_id="P", flavor="F", auto_stop=True)


def test_list_sends_only_given_filters(recorder: Recorder) -> None:
    recorder._answer = lambda _r: httpx.Response(200, json={"total_count": 0, "instances": []})
    with mock_client(recorder) as dm:
        dm.list()
        assert dict(recorder.last.url.params) == {"de_type": "Notebook"}
        dm.list(
            status="RUNNING",
            sortby="creation_timestamp",
            order="desc",
            offset=5,
            limit=10,
            workspace_id="0",
            show_self=False,
            ai_project="ai",
            pool_id="pool",
            provision_type="Docker",
        )
    assert dict(recorder.last.url.params) == {
        "de_type": "Notebook",
        "status": "RUNNING",
        "sortby": "creation_timestamp",
        "order": "desc",
        "offset": "5",
        "limit": "10",
        "workspace_id": "0",
        "show_self": "false",
        "ai_project": "ai",
        "pool_id": "pool",
        "provision_type": "Docker",
    }


def test_get_quotes_the_id(dm: Client, recorder: Recorder) -> None:
    dm.get("a/b?c")
    assert recorder.last.url.raw_path.decode() == f"{BASE}/instances/a%2Fb%3Fc"


def test_update_bodies(dm: Client, recorder: Recorder) -> None:
    dm.update("DE-1", description="new")
    assert recorder.last.method == "PUT"
    assert recorder.body() == {"description": "new"}
    dm.update("DE-1", auto_stop=3600)
    assert recorder.body() == {"spec": {"auto_stop": {"enable": True, "duration": 3600}}}
    dm.update("DE-1", auto_stop=AutoStopRequest(enable=False))
    assert recorder.body() == {"spec": {"auto_stop": {"enable": False}}}


@pytest.mark.parametrize("action", ["start", "stop", "restart", "queue", "dequeue"])
def test_actions(action: str) -> None:
    recorder = Recorder(
        lambda _r: httpx.Response(
            200, json={"current_status": "STARTING", "previous_state": "STOPPED"}
        )
    )
    with mock_client(recorder) as dm:
        method = {
            "start": dm.start,
            "stop": dm.stop,
            "restart": dm.restart,
            "queue": dm.queue,
            "dequeue": dm.dequeue,
        }[action]
        answer = method("DE-1")
    assert answer.current_status == "STARTING"
    assert answer.previous_state == "STOPPED"
    assert recorder.last.url.path == f"{BASE}/instances/DE-1/action"
    assert recorder.body() == {"action": action}


def test_delete_token_profiles_flavors() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "DELETE":
            return httpx.Response(200, json={"instance_id": "DE-1"})
        if path.endswith("/token"):
            return httpx.Response(200, json={"token": "abc"})
        if path.endswith("/profiles"):
            return httpx.Response(200, json={"profiles": [wire_instance()["profile"]]})
        return httpx.Response(200, json={"flavors": [wire_instance()["flavor_details"]]})

    recorder = Recorder(answer)
    with mock_client(recorder) as dm:
        assert dm.delete("DE-1").instance_id == "DE-1"
        assert dm.token("DE-1") == "abc"
        assert [p.id for p in dm.profiles()] == ["Multi-Engine 1.0 (python3)-cpu"]
        assert [f.name for f in dm.flavors()] == ["modelarts.vm.cpu.2u"]
    assert [(r.method, r.url.path) for r in recorder.requests] == [
        ("DELETE", f"{BASE}/instances/DE-1"),
        ("GET", f"{BASE}/instances/DE-1/token"),
        ("GET", f"{BASE}/profiles"),
        ("GET", f"{BASE}/flavors"),
    ]


def test_base_url_with_a_path_prefix(recorder: Recorder) -> None:
    with Client(
        "http://dm.test/prefix/",
        project=PROJECT,
        token="t",
        transport=httpx.MockTransport(recorder),
    ) as dm:
        dm.get("DE-1")
    assert recorder.last.url.path == f"/prefix{BASE}/instances/DE-1"


def test_unknown_response_keys_survive_a_round_trip(dm: Client, recorder: Recorder) -> None:
    recorder._answer = lambda _r: httpx.Response(200, json=wire_instance(future_field={"x": 1}))
    instance = dm.get("DE-1")
    assert json.loads(instance.model_dump_json(exclude_unset=True)) == wire_instance(
        future_field={"x": 1}
    )


# -- paging ---------------------------------------------------------------


def paged(total: int, calls: list[tuple[int, int]]) -> Callable[[httpx.Request], httpx.Response]:
    everything = [wire_instance(n) for n in range(total)]

    def answer(request: httpx.Request) -> httpx.Response:
        offset = int(request.url.params.get("offset", "0"))
        limit = int(request.url.params.get("limit", "0"))
        calls.append((offset, limit))
        page = everything[offset : offset + limit] if limit else everything[offset:]
        return httpx.Response(200, json={"total_count": total, "instances": page})

    return answer


def test_iter_instances_walks_every_page() -> None:
    calls: list[tuple[int, int]] = []
    with mock_client(paged(250, calls)) as dm:
        names = [instance.name for instance in dm.iter_instances(page_size=100)]
    assert names == [f"nb-{n:04d}" for n in range(250)]
    assert calls == [(0, 100), (100, 100), (200, 100)]


def test_iter_instances_stops_at_an_exact_multiple() -> None:
    calls: list[tuple[int, int]] = []
    with mock_client(paged(200, calls)) as dm:
        assert len(list(dm.iter_instances(page_size=100))) == 200
        assert calls == [(0, 100), (100, 100)]


def test_iter_instances_of_nothing_makes_one_call() -> None:
    calls: list[tuple[int, int]] = []
    with mock_client(paged(0, calls)) as dm:
        assert list(dm.iter_instances()) == []
    assert calls == [(0, 100)]


def test_iter_instances_survives_a_shrinking_list() -> None:
    # total_count claims more than the server still has: an empty page ends the walk.
    def answer(request: httpx.Request) -> httpx.Response:
        offset = int(request.url.params["offset"])
        page = [wire_instance(offset)] if offset < 2 else []
        return httpx.Response(200, json={"total_count": 10, "instances": page})

    with mock_client(answer) as dm:
        assert len(list(dm.iter_instances(page_size=1))) == 2


def test_iter_instances_passes_filters() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"total_count": 0, "instances": []})

    with mock_client(answer) as dm:
        list(dm.iter_instances(status="RUNNING", show_self=False, sortby="creation_timestamp"))
    params = dict(seen[0].url.params)
    assert params["status"] == "RUNNING"
    assert params["show_self"] == "false"
    assert params["sortby"] == "creation_timestamp"
    assert params["limit"] == "100"


def test_page_size_must_be_positive(dm: Client) -> None:
    with pytest.raises(ValueError, match="page_size"):
        next(dm.iter_instances(page_size=0))


def test_find_looks_at_everyone_s_instances() -> None:
    calls: list[tuple[int, int]] = []
    with mock_client(paged(150, calls)) as dm:
        found = dm.find("nb-0120")
        assert found is not None
        assert found.id.endswith("000000000120")
        assert dm.find("nope") is None


async def test_async_iter_instances_walks_every_page() -> None:
    calls: list[tuple[int, int]] = []
    sync_answer = paged(250, calls)

    async def answer(request: httpx.Request) -> httpx.Response:
        return sync_answer(request)

    async with mock_async_client(answer) as dm:
        names = [instance.name async for instance in dm.iter_instances(page_size=100)]
        assert (await dm.find("nb-0249")) is not None
    assert len(names) == 250
    assert calls[:3] == [(0, 100), (100, 100), (200, 100)]


async def test_async_methods_send_the_same_requests() -> None:
    seen: list[httpx.Request] = []

    async def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path.endswith("/action"):
            return httpx.Response(
                200, json={"current_status": "STOPPING", "previous_state": "RUNNING"}
            )
        if request.method == "DELETE":
            return httpx.Response(200, json={"instance_id": "DE-1"})
        return httpx.Response(200, json=wire_instance())

    async with mock_async_client(answer) as dm:
        await dm.create("nb", profile_id="P", flavor="F", auto_stop=3600)
        await dm.update("DE-1", description="d")
        await dm.stop("DE-1")
        await dm.delete("DE-1")
    assert [(r.method, r.url.path) for r in seen] == [
        ("POST", f"{BASE}/instances"),
        ("PUT", f"{BASE}/instances/DE-1"),
        ("POST", f"{BASE}/instances/DE-1/action"),
        ("DELETE", f"{BASE}/instances/DE-1"),
    ]
    assert json.loads(seen[0].content)["spec"]["auto_stop"] == {
        "enable": True,
        "duration": 3600,
    }
