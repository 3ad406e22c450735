"""``/openapi.json`` describes the real wire format (DESIGN: fixed decisions)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.server import ServerProcess

BASE = "/v1/{project_id}/demanager/instances"


@pytest.fixture(scope="module")
def document(server: ServerProcess) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/openapi.json")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


ROUTES = [
    ("post", BASE), ("get", BASE), ("get", BASE + "/{instance_id}"),
    ("put", BASE + "/{instance_id}"), ("delete", BASE + "/{instance_id}"),
    ("post", BASE + "/{instance_id}/action"), ("get", BASE + "/{instance_id}/token"),
    ("post", BASE + "/{instance_id}/signed-url"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_route_is_described(document: dict[str, Any], method: str, path: str) -> None:
    operation = document["paths"][path][method]
    assert "200" in operation["responses"]
    assert "400" in operation["responses"]
    params = {p["name"] for p in operation.get("parameters", [])}
    assert "project_id" in params


def test_no_extra_methods_on_contract_paths(document: dict[str, Any]) -> None:
    methods = {path: set(ops) for path, ops in document["paths"].items() if path.startswith(BASE)}
    assert methods == {
        BASE: {"get", "post"},
        BASE + "/{instance_id}": {"get", "put", "delete"},
        BASE + "/{instance_id}/action": {"post"},
        BASE + "/{instance_id}/token": {"get"},
        BASE + "/{instance_id}/signed-url": {"post"},  # extension: docs/reference/api.md
        BASE + "/{instance_id}/events": {"get"},  # extension: docs/events.md
        BASE + "/{instance_id}/stops": {"get"},  # extension: docs/lifecycle-policy.md
        BASE + "/{instance_id}/extend": {"post"},  # extension: docs/lifecycle-policy.md
    }


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def response_schema(document: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    content = document["paths"][path][method]["responses"]["200"]["content"]
    return resolve(document, content["application/json"]["schema"])


def test_instance_schema(document: dict[str, Any]) -> None:
    instance = response_schema(document, "get", BASE + "/{instance_id}")
    props = instance["properties"]
    for key in ("id", "name", "description", "status", "creation_timestamp",
                "latest_update_timestamp", "profile", "flavor", "flavor_details", "spec",
                "workspace", "ai_project", "user", "pool", "error_code", "queuing_info"):
        assert key in props, key
    assert props["creation_timestamp"]["type"] == "string"
    assert props["latest_update_timestamp"]["type"] == "string"
    for key in ("id", "name", "status", "creation_timestamp", "profile", "flavor_details",
                "spec", "user"):
        assert key in instance["required"], key
    spec = resolve(document, props["spec"])
    assert {"storage", "extend_storage", "auto_stop", "annotations", "repository",
            "failed_reasons", "extend_params"} <= set(spec["properties"])
    auto_stop = resolve(document, spec["properties"]["auto_stop"])
    stop_ts = auto_stop["properties"]["stop_timestamp"]
    assert "integer" in str(stop_ts)


def test_small_bodies(document: dict[str, Any]) -> None:
    listing = response_schema(document, "get", BASE)
    assert set(listing["properties"]) == {"total_count", "instances"}
    deleted = response_schema(document, "delete", BASE + "/{instance_id}")
    assert set(deleted["properties"]) == {"instance_id"}
    action = response_schema(document, "post", BASE + "/{instance_id}/action")
    assert set(action["properties"]) == {"current_status", "previous_state"}
    error = resolve(document, document["paths"][BASE]["get"]["responses"]["400"]["content"][
        "application/json"]["schema"])
    assert set(error["properties"]) == {"error_code", "error_message"}


@pytest.mark.parametrize(("method", "path", "schema"), [
    ("post", BASE, "InstanceCreate"),
    ("put", BASE + "/{instance_id}", "InstanceUpdate"),
    ("post", BASE + "/{instance_id}/action", "ActionRequest"),
])
def test_request_bodies(document: dict[str, Any], method: str, path: str, schema: str) -> None:
    body = document["paths"][path][method]["requestBody"]["content"]["application/json"]
    assert body["schema"]["$ref"].endswith(f"/{schema}")
    assert schema in document["components"]["schemas"]


def test_create_schema_fields(document: dict[str, Any]) -> None:
    create = document["components"]["schemas"]["InstanceCreate"]
    assert {"name", "profile_id", "flavor", "spec"} <= set(create["required"])
    assert {"description", "workspace", "pool", "ai_project"} <= set(create["properties"])


def test_list_parameters_are_described(document: dict[str, Any]) -> None:
    params = {p["name"] for p in document["paths"][BASE]["get"].get("parameters", [])}
    assert {"de_type", "provision_type", "status", "sortby", "order", "offset", "limit",
            "workspace_id", "show_self", "ai_project", "pool_id"} <= params


def test_token_header_security(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert {"type": "apiKey", "in": "header", "name": "X-Auth-Token"} in schemes.values()
