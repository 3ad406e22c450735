"""The Python SDK of demanager: typed access to the DevEnviron ``demanager`` API.

    from demanager.client import Client

    with Client() as dm:  # settings from `demanager login` or DEMANAGER_* variables
        nb = dm.create("churn-dev", profile_id="Multi-Engine 1.0 (python3)-cpu",
                       flavor="modelarts.vm.cpu.2u")
        nb = dm.wait_until(nb.id, "RUNNING")
        print(nb.spec.annotations["url"])

It depends only on httpx, pydantic and the wire models of ``demanager.schemas``,
never on server code, so it can be installed and used far from any server.
"""

from demanager.client._async import AsyncClient
from demanager.client._calls import Action, Order, SortBy
from demanager.client._config import ClientConfig, default_config_path, save_config
from demanager.client._sync import Client
from demanager.client._waiting import FAILED_STATUSES, STATUSES
from demanager.client.exceptions import (
    AuthenticationError,
    CapacityExhausted,
    ConfigurationError,
    DemanagerAPIError,
    DemanagerClientError,
    InstanceFailed,
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
    WaitTimeout,
)
from demanager.schemas.events import Event, EventPage
from demanager.schemas.instances import (
    ActionResponse,
    AutoStopRequest,
    DeleteResponse,
    FlavorDetails,
    Instance,
    InstanceList,
    Location,
    Profile,
    RunStops,
    SignedUrlResponse,
    Storage,
)

__all__ = [
    "FAILED_STATUSES",
    "STATUSES",
    "Action",
    "ActionResponse",
    "AsyncClient",
    "AuthenticationError",
    "AutoStopRequest",
    "CapacityExhausted",
    "Client",
    "ClientConfig",
    "ConfigurationError",
    "DeleteResponse",
    "DemanagerAPIError",
    "DemanagerClientError",
    "Event",
    "EventPage",
    "FlavorDetails",
    "Instance",
    "InstanceFailed",
    "InstanceList",
    "InstanceNotFound",
    "InvalidRequest",
    "Location",
    "NameTaken",
    "Order",
    "PermissionDenied",
    "Profile",
    "QuotaExceeded",
    "RouteNotFound",
    "RunStops",
    "ServerBusy",
    "ServerError",
    "SignedUrlResponse",
    "SortBy",
    "StateConflict",
    "Storage",
    "TransportError",
    "UnexpectedResponse",
    "WaitTimeout",
    "default_config_path",
    "save_config",
]
