"""Every non-2xx answer becomes the typed exception its ``ModelArts`` code stands for."""

from __future__ import annotations

import re

import httpx
import pytest

from demanager.client import (
    AsyncClient,
    AuthenticationError,
    CapacityExhausted,
    Client,
    DemanagerAPIError,
    InstanceNotFound,
    InvalidRequest,
    NameTaken,
    PermissionDenied,
    QuotaExceeded,
    RouteNotFound,
    ServerBusy,
    ServerError,
    StateConflict,
    TransportError,
    UnexpectedResponse,
)
from tests.unit.sdk_fakes import PROJECT


def answering(status: int, body: object) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(body, str):
            return httpx.Response(status, text=body)
        return httpx.Response(status, json=body)

    return httpx.MockTransport(handler)


def client_for(transport: httpx.BaseTransport) -> Client:
    return Client("http://dm.test", project=PROJECT, token="t", transport=transport)


def error(code: str, message: str = "boom") -> dict[str, str]:
    return {"error_code": f"ModelArts.{code}", "error_message": message}


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (400, "6309", InstanceNotFound),
        (400, "6301", NameTaken),
        (400, "6302", QuotaExceeded),
        (400, "0118", QuotaExceeded),
        (400, "6304", StateConflict),
        (400, "6305", StateConflict),
        (400, "6306", StateConflict),
        (400, "6307", StateConflict),
        (400, "6308", StateConflict),
        (400, "6327", StateConflict),
        (400, "6333", StateConflict),
        (400, "6357", StateConflict),
        (400, "6329", CapacityExhausted),
        (400, "6360", CapacityExhausted),
        (400, "6336", InvalidRequest),
        (400, "6332", InvalidRequest),
        (400, "9999", InvalidRequest),
        (401, "0201", AuthenticationError),
        (401, "6620", AuthenticationError),
        (401, "0202", AuthenticationError),
        (401, "9999", AuthenticationError),
        (403, "0210", PermissionDenied),
        (403, "0108", PermissionDenied),
        (404, "2836", RouteNotFound),
        (405, "2803", DemanagerAPIError),
        (408, "6100", ServerBusy),
        (429, "6101", ServerBusy),
        (500, "6102", ServerError),
        (500, "6200", CapacityExhausted),
        (503, "9999", ServerError),
    ],
)
def test_codes_map_to_classes(status: int, code: str, expected: type[DemanagerAPIError]) -> None:
    with (
        client_for(answering(status, error(code, "the message"))) as dm,
        pytest.raises(DemanagerAPIError) as caught,
    ):
        dm.get("DE-1")
    assert type(caught.value) is expected
    assert caught.value.code == f"ModelArts.{code}"
    assert caught.value.message == "the message"
    assert caught.value.http_status == status
    assert str(caught.value) == f"ModelArts.{code}: the message"


def test_any_401_is_an_authentication_error_even_with_another_code() -> None:
    with (
        client_for(answering(401, error("6309"))) as dm,
        pytest.raises(AuthenticationError),
    ):
        dm.get("DE-1")


def test_body_not_in_the_contract_shape_still_gives_a_typed_error() -> None:
    with (
        client_for(answering(502, "<html>Bad Gateway</html>")) as dm,
        pytest.raises(ServerError) as caught,
    ):
        dm.get("DE-1")
    assert caught.value.code is None
    assert caught.value.http_status == 502
    assert "Bad Gateway" in str(caught.value)


def test_error_msg_key_is_read_too() -> None:
    body = {"error_code": "ModelArts.6309", "error_msg": "gone"}
    with (
        client_for(answering(400, body)) as dm,
        pytest.raises(InstanceNotFound, match="gone"),
    ):
        dm.get("DE-1")


def test_transport_failures_are_wrapped() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with (
        client_for(httpx.MockTransport(refuse)) as dm,
        pytest.raises(TransportError, match=re.escape("cannot reach http://dm.test")) as caught,
    ):
        dm.get("DE-1")
    assert isinstance(caught.value.__cause__, httpx.ConnectError)


def test_success_that_is_not_json_is_unexpected() -> None:
    with client_for(answering(200, "ok")) as dm, pytest.raises(UnexpectedResponse):
        dm.get("DE-1")


def test_success_with_the_wrong_shape_is_unexpected() -> None:
    with (
        client_for(answering(200, {"hello": 1})) as dm,
        pytest.raises(UnexpectedResponse),
    ):
        dm.get("DE-1")


async def test_async_client_maps_errors_the_same_way() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json=error("6309"))

    async with AsyncClient(
        "http://dm.test",
        project=PROJECT,
        token="t",
        transport=httpx.MockTransport(handler),
    ) as dm:
        with pytest.raises(InstanceNotFound):
            await dm.get("DE-1")


async def test_async_transport_failures_are_wrapped() -> None:
    async def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with AsyncClient(
        "http://dm.test",
        project=PROJECT,
        token="t",
        transport=httpx.MockTransport(refuse),
    ) as dm:
        with pytest.raises(TransportError):
            await dm.list()
