"""The SDK's public surface is pinned, and it never drags server code along."""

from __future__ import annotations

import subprocess
import sys

import demanager.client

EXPECTED = {
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
    "ServerBusy",
    "ServerError",
    "RunStops",
    "SignedUrlResponse",
    "SortBy",
    "StateConflict",
    "Storage",
    "TransportError",
    "UnexpectedResponse",
    "WaitTimeout",
    "default_config_path",
    "save_config",
}


def test_all_is_pinned() -> None:
    assert set(demanager.client.__all__) == EXPECTED
    assert len(demanager.client.__all__) == len(EXPECTED)


def test_every_exported_name_exists() -> None:
    for name in demanager.client.__all__:
        assert hasattr(demanager.client, name), name


def test_exceptions_share_one_root() -> None:
    for name in demanager.client.__all__:
        value = getattr(demanager.client, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, demanager.client.DemanagerClientError), name


def test_sdk_imports_no_server_code() -> None:
    # A fresh interpreter: other tests may already have imported the server.
    probe = (
        "import sys, demanager.client\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[:2] in (\n"
        "  ['demanager', p] for p in ('api', 'store', 'engine', 'backends', 'domain',\n"
        "  'settings', 'errors', 'proxy', 'web', 'cli', 'catalog')))\n"
        "heavy = [m for m in ('fastapi', 'sqlalchemy', 'typer', 'uvicorn') if m in sys.modules]\n"
        "print(bad + heavy)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
