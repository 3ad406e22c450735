"""What each SDK method sends and how it reads the answer, without doing any I/O.

``Client`` and ``AsyncClient`` differ only in how they send a request; every
route's path, query, body and answer model is described once here as a
``Call`` (the "sans-I/O" split httpx itself uses), so the two clients cannot
drift apart.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from demanager import __version__
from demanager.client._config import ClientConfig
from demanager.client.exceptions import UnexpectedResponse, error_from_response
from demanager.schemas.events import EventPage
from demanager.schemas.instances import (
    ActionResponse,
    AutoStopRequest,
    DeleteResponse,
    FlavorDetails,
    FlavorList,
    Instance,
    InstanceList,
    Profile,
    ProfileList,
    RunStops,
    SignedUrlResponse,
    Storage,
    TokenResponse,
)

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

Action = Literal["start", "stop", "restart", "queue", "dequeue"]
SortBy = Literal["name", "creation_timestamp"]
Order = Literal["asc", "desc"]

DEFAULT_TIMEOUT = 30.0
USER_AGENT = f"demanager-sdk/{__version__}"


def headers_for(config: ClientConfig) -> dict[str, str]:
    return {
        "X-Auth-Token": config.token,
        "Accept": "application/json",
        "User-Agent": USER_AGENT,
    }


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One HTTP exchange: the request to send and the function that reads a 2xx answer."""

    method: str
    path: str
    read: Callable[[Any], T]
    params: Mapping[str, str] | None = None
    body: Mapping[str, Any] | None = None

    def request(self, http: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        return http.build_request(
            self.method,
            self.path,
            params=dict(self.params) if self.params else None,
            json=dict(self.body) if self.body is not None else None,
        )

    def answer(self, response: httpx.Response) -> T:
        """The parsed result, or the typed error the answer stands for."""
        if not response.is_success:
            raise error_from_response(response)
        try:
            payload = response.json()
        except ValueError as exc:
            raise UnexpectedResponse(
                f"{self.method} {self.path}: answer is not JSON",
                http_status=response.status_code,
            ) from exc
        try:
            return self.read(payload)
        except ValidationError as exc:
            raise UnexpectedResponse(
                f"{self.method} {self.path}: answer does not match the contract: {exc}",
                http_status=response.status_code,
            ) from exc


def _model(model: type[M]) -> Callable[[Any], M]:
    return model.model_validate


def _read_profiles(payload: Any) -> list[Profile]:
    return ProfileList.model_validate(payload).profiles


def _read_flavors(payload: Any) -> list[FlavorDetails]:
    return FlavorList.model_validate(payload).flavors


def _read_token(payload: Any) -> str:
    return TokenResponse.model_validate(payload).token


def _wire(model: BaseModel) -> dict[str, Any]:
    # Only what the caller set: absent fields must stay absent on the wire,
    # since the server fills its own defaults.
    return model.model_dump(mode="json", exclude_none=True)


def auto_stop_body(auto_stop: int | AutoStopRequest) -> dict[str, Any]:
    """``3600`` is shorthand for "stop after one hour"; a model is sent as given."""
    if isinstance(auto_stop, bool):
        raise TypeError("auto_stop takes seconds (int) or an AutoStopRequest, not a bool")
    if isinstance(auto_stop, int):
        return {"enable": True, "duration": auto_stop}
    return _wire(auto_stop)


def _flag(value: bool) -> str:
    return "true" if value else "false"


class Calls:
    """The routes of one project (contract §1.1 and the catalog extension)."""

    def __init__(self, project: str) -> None:
        self._root = f"/v1/{quote(project, safe='')}/demanager"
        self._instances = f"{self._root}/instances"

    def _instance(self, instance_id: str) -> str:
        # IDs are opaque to the contract; quoting keeps a stray "/" or "?" in
        # user input from turning into another route.
        return f"{self._instances}/{quote(instance_id, safe='')}"

    def create(
        self,
        name: str,
        *,
        profile_id: str,
        flavor: str,
        storage: Storage | None = None,
        description: str | None = None,
        auto_stop: int | AutoStopRequest | None = None,
        annotations: Mapping[str, str] | None = None,
        extend_storage: Sequence[Storage] | None = None,
        workspace_id: str | None = None,
        pool_id: str | None = None,
        ai_project: str | None = None,
    ) -> Call[Instance]:
        spec: dict[str, Any] = {
            "storage": _wire(storage) if storage is not None else {"type": "evs"},
        }
        if extend_storage is not None:
            spec["extend_storage"] = [_wire(item) for item in extend_storage]
        if auto_stop is not None:
            spec["auto_stop"] = auto_stop_body(auto_stop)
        if annotations is not None:
            spec["annotations"] = dict(annotations)
        body: dict[str, Any] = {
            "name": name,
            "profile_id": profile_id,
            "flavor": flavor,
            "spec": spec,
        }
        if description is not None:
            body["description"] = description
        if workspace_id is not None:
            body["workspace"] = {"id": workspace_id}
        if pool_id is not None:
            body["pool"] = {"id": pool_id}
        if ai_project is not None:
            body["ai_project"] = {"id": ai_project}
        return Call("POST", self._instances, _model(Instance), body=body)

    def list(
        self,
        *,
        de_type: str = "Notebook",
        status: str | None = None,
        sortby: SortBy | None = None,
        order: Order | None = None,
        offset: int | None = None,
        limit: int | None = None,
        workspace_id: str | None = None,
        show_self: bool | None = None,
        ai_project: str | None = None,
        pool_id: str | None = None,
        provision_type: str | None = None,
    ) -> Call[InstanceList]:
        given: dict[str, str | None] = {
            "de_type": de_type,
            "status": status,
            "sortby": sortby,
            "order": order,
            "offset": str(offset) if offset is not None else None,
            "limit": str(limit) if limit is not None else None,
            "workspace_id": workspace_id,
            "show_self": _flag(show_self) if show_self is not None else None,
            "ai_project": ai_project,
            "pool_id": pool_id,
            "provision_type": provision_type,
        }
        params = {key: value for key, value in given.items() if value is not None}
        return Call("GET", self._instances, _model(InstanceList), params=params)

    def get(self, instance_id: str) -> Call[Instance]:
        return Call("GET", self._instance(instance_id), _model(Instance))

    def update(
        self,
        instance_id: str,
        *,
        description: str | None = None,
        auto_stop: int | AutoStopRequest | None = None,
    ) -> Call[Instance]:
        body: dict[str, Any] = {}
        if description is not None:
            body["description"] = description
        if auto_stop is not None:
            body["spec"] = {"auto_stop": auto_stop_body(auto_stop)}
        return Call("PUT", self._instance(instance_id), _model(Instance), body=body)

    def delete(self, instance_id: str) -> Call[DeleteResponse]:
        return Call("DELETE", self._instance(instance_id), _model(DeleteResponse))

    def action(self, instance_id: str, action: Action) -> Call[ActionResponse]:
        return Call(
            "POST",
            f"{self._instance(instance_id)}/action",
            _model(ActionResponse),
            body={"action": action},
        )

    def token(self, instance_id: str) -> Call[str]:
        return Call("GET", f"{self._instance(instance_id)}/token", _read_token)

    def signed_url(self, instance_id: str) -> Call[SignedUrlResponse]:
        return Call("POST", f"{self._instance(instance_id)}/signed-url",
                    _model(SignedUrlResponse))

    def stops(self, instance_id: str) -> Call[RunStops]:
        return Call("GET", f"{self._instance(instance_id)}/stops", _model(RunStops))

    def extend(self, instance_id: str, seconds: int) -> Call[RunStops]:
        return Call("POST", f"{self._instance(instance_id)}/extend", _model(RunStops),
                    body={"seconds": seconds})

    def events(
        self,
        instance_id: str | None,
        *,
        after: int | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> Call[EventPage]:
        given = {"after": after, "limit": limit, "offset": offset}
        params = {key: str(value) for key, value in given.items() if value is not None}
        return Call("GET", self.events_path(instance_id), _model(EventPage), params=params)

    def events_path(self, instance_id: str | None) -> str:
        """The project's events, or one instance's; ``/stream`` appended is the live feed."""
        if instance_id is None:
            return f"{self._root}/events"
        return f"{self._instance(instance_id)}/events"

    def profiles(self) -> Call[builtins.list[Profile]]:
        return Call("GET", f"{self._root}/profiles", _read_profiles)

    def flavors(self) -> Call[builtins.list[FlavorDetails]]:
        return Call("GET", f"{self._root}/flavors", _read_flavors)


def next_offset(page: InstanceList, offset: int) -> int | None:
    """Where the next page starts, or ``None`` once ``total_count`` is reached.

    An empty page also ends the walk, so instances deleted while paging can
    never make the iterator spin on an offset past the end.
    """
    if not page.instances:
        return None
    following = offset + len(page.instances)
    return following if following < page.total_count else None
