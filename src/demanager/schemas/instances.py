"""Wire models of instances and the small bodies around them (contract §3, §3.21)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Wire(BaseModel):
    """Unknown keys are kept on read so an SDK keeps working against newer servers."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


class Location(Wire):
    path: str | None = None
    volume_size: int | None = None
    volume_unit: str | None = None
    mount_path: str | None = None
    access_modes: str | None = None


class Storage(Wire):
    type: str
    location: Location | None = None


class AutoStopRequest(Wire):
    enable: bool | None = None
    duration: int | None = Field(default=None, description="seconds, 3600-86400")
    prompt: bool | None = None


class AutoStop(Wire):
    enable: bool
    duration: int | None = None
    prompt: bool
    stop_timestamp: int | None = Field(default=None, description="ms; only while RUNNING")
    remain_time: int | None = Field(default=None, description="seconds; only while RUNNING")


class FailedReasons(Wire):
    code: str
    message: str
    detail: dict[str, str] = Field(default_factory=dict)


class DockerParams(Wire):
    namespace: str
    image_name: str
    image_tag: str
    annotations: dict[str, str] | None = None


class ProvisionSpec(Wire):
    engine: str = "CCE"
    params: DockerParams


class Provision(Wire):
    type: str = "Docker"
    spec: ProvisionSpec
    annotations: dict[str, str] | None = None


class Profile(Wire):
    id: str
    name: str
    description: str
    de_type: str = "Notebook"
    flavor_type: str
    provision: Provision
    labels: dict[str, str] | None = None


class FlavorDetails(Wire):
    name: str
    status: str
    type: str
    params: dict[str, Any]
    promo_type: str | None = None
    queuing_num: int | None = None
    queue_left_time: int | None = None
    storage_list: list[str] | None = None
    is_permitted: bool | None = None
    instance_num: int | None = None
    duration: int | None = None
    store_time: int | None = None


class PoolOwner(Wire):
    project_id: str


class Pool(Wire):
    id: str
    name: str | None = None
    type: str | None = None
    owner: PoolOwner | None = None


class Reference(Wire):
    """``workspace`` and ``ai_project``: just an id."""

    id: str


class User(Wire):
    id: str
    name: str


class QueuingInfo(Wire):
    id: str
    name: str
    de_type: str = "Notebook"
    flavor: str
    flavor_details: FlavorDetails | None = None
    status: str
    begin_timestamp: int
    remain_time: int | None = None
    end_timestamp: int | None = None
    rank: int


class NotebookSpec(Wire):
    storage: Storage
    extend_storage: list[Storage] | None = None
    auto_stop: AutoStop
    annotations: dict[str, str]
    repository: None = None
    failed_reasons: FailedReasons | None = None
    extend_params: dict[str, str] | None = None
    resource_reserved_timestamp: int | None = None


class Instance(Wire):
    id: str
    name: str
    description: str
    status: str
    creation_timestamp: str = Field(description="ms since the epoch, as a string")
    latest_update_timestamp: str = Field(description="ms since the epoch, as a string")
    profile: Profile
    flavor: str
    flavor_details: FlavorDetails
    pool: Pool | None = None
    spec: NotebookSpec
    workspace: Reference
    ai_project: Reference
    error_code: str | None = None
    queuing_info: QueuingInfo | None = None
    user: User


class InstanceList(Wire):
    total_count: int
    instances: list[Instance]


class NotebookSpecCreate(Wire):
    storage: Storage
    extend_storage: list[Storage] | None = None
    auto_stop: AutoStopRequest | None = None
    annotations: dict[str, str] | None = None


class InstanceCreate(Wire):
    """The create body (contract §2.1). The server checks it by hand, in the contract's order."""

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = Field(default=None, max_length=512)
    profile_id: str
    flavor: str
    spec: NotebookSpecCreate
    workspace: Reference | None = None
    pool: Pool | None = None
    ai_project: Reference | None = None


class NotebookSpecUpdate(Wire):
    auto_stop: AutoStopRequest | None = None


class InstanceUpdate(Wire):
    description: str | None = Field(default=None, max_length=512)
    spec: NotebookSpecUpdate | None = None


class DeleteResponse(Wire):
    instance_id: str


class ActionRequest(Wire):
    action: str = Field(description="start, stop, restart, queue or dequeue")


class ActionResponse(Wire):
    current_status: str
    previous_state: str


class ExtendRequest(Wire):
    seconds: int = Field(description="How much later every stop of the current run comes, "
                                     "within the operator's limit per run")


class PlannedStop(Wire):
    reason: str = Field(description="auto_stop, max_lifetime or idle")
    at: int = Field(description="When, in ms since the epoch")
    why: str


class RunStops(Wire):
    id: str
    status: str
    stops: list[PlannedStop] = Field(
        description="The run's deadlines, earliest first; empty unless RUNNING")
    idle_timeout_seconds: int | None = Field(
        description="Idle time after which the run stops, extensions included; null "
                    "without an idle timeout")
    warn_before_seconds: int
    extended_seconds: int
    extension_left_seconds: int


class TokenResponse(Wire):
    token: str


class SignedUrlResponse(Wire):
    """Extension: a link that opens the notebook through the proxy, without signing in."""

    url: str
    expires_at: int = Field(description="When the link stops working (ms since the epoch).")


class ErrorBody(Wire):
    error_code: str = Field(examples=["ModelArts.6309"])
    error_message: str


class ProfileList(Wire):
    """Extension: ``GET /v1/{project_id}/demanager/profiles``."""

    profiles: list[Profile]


class FlavorList(Wire):
    """Extension: ``GET /v1/{project_id}/demanager/flavors``."""

    flavors: list[FlavorDetails]
