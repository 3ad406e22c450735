"""Every failure the SDK can raise, and the one table from a ``ModelArts`` code to a class.

Callers catch by meaning, not by HTTP status: the contract answers 400 for
"instance not found" and for "instance is running", so the status alone says
little. The server's ``error_code`` decides the class; the HTTP status is only
the fallback for codes this table does not know (a newer server).

    DemanagerClientError
    ├── ConfigurationError          no server URL, token or project configured
    ├── TransportError              the server could not be reached or did not answer
    ├── UnexpectedResponse          a 2xx answer that is not the contract's JSON
    ├── WaitTimeout                 wait_until() ran out of time (also a TimeoutError)
    ├── InstanceFailed              wait_until() saw a failed status it was not waiting for
    └── DemanagerAPIError           the server answered an error body
        ├── AuthenticationError     every 401 (0201, 0202, 0212, 6201, 6203, 6608, 6620)
        ├── PermissionDenied        every 403 (0210, 0108, 0112)
        ├── InstanceNotFound        6309
        ├── NameTaken               6301
        ├── QuotaExceeded           6302, 0118, 0113
        ├── StateConflict           6304-6308, 6326, 6327, 6333, 6357
        ├── CapacityExhausted       6329, 6360, 6200
        ├── InvalidRequest          any other 400
        ├── RouteNotFound           404 (2836): wrong URL, or a server without the route
        ├── ServerBusy              408 (6100), 429 (6101): retrying later may succeed
        └── ServerError             other 5xx (6102)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from collections.abc import Iterable

    from demanager.schemas.instances import Instance

__all__ = [
    "AuthenticationError",
    "CapacityExhausted",
    "ConfigurationError",
    "DemanagerAPIError",
    "DemanagerClientError",
    "InstanceFailed",
    "InstanceNotFound",
    "InvalidRequest",
    "NameTaken",
    "PermissionDenied",
    "QuotaExceeded",
    "RouteNotFound",
    "ServerBusy",
    "ServerError",
    "StateConflict",
    "TransportError",
    "UnexpectedResponse",
    "WaitTimeout",
    "error_from_response",
]


class DemanagerClientError(Exception):
    """Base of everything the SDK raises on purpose."""


class ConfigurationError(DemanagerClientError):
    """The server URL, token or project is missing or unusable."""


class TransportError(DemanagerClientError):
    """The request did not get an HTTP answer (refused, DNS, TLS, timeout).

    The ``httpx`` error is chained as ``__cause__``.
    """


class UnexpectedResponse(DemanagerClientError):
    """A success answer whose body does not match the contract."""

    def __init__(self, message: str, *, http_status: int) -> None:
        super().__init__(message)
        self.http_status = http_status


class WaitTimeout(DemanagerClientError, TimeoutError):
    """``wait_until`` reached its deadline before the instance reached a target status."""

    def __init__(
        self,
        instance_id: str,
        targets: Iterable[str],
        last_status: str | None,
        timeout: float,
    ) -> None:
        self.instance_id = instance_id
        self.targets = frozenset(targets)
        self.last_status = last_status
        self.timeout = timeout
        wanted = " or ".join(sorted(self.targets))
        super().__init__(
            f"{instance_id} is still {last_status or 'unknown'} after {timeout:g} s "
            f"(waiting for {wanted})"
        )


class InstanceFailed(DemanagerClientError):
    """The instance landed in a failed status that was not one of the targets."""

    def __init__(self, instance: Instance) -> None:
        self.instance = instance
        reasons = instance.spec.failed_reasons
        self.error_code = instance.error_code or (reasons.code if reasons else None)
        detail = f": {reasons.message}" if reasons else ""
        code = f" ({self.error_code})" if self.error_code else ""
        super().__init__(f"{instance.id} is {instance.status}{code}{detail}")

    @property
    def status(self) -> str:
        return self.instance.status


class DemanagerAPIError(DemanagerClientError):
    """The server answered with an error body ``{"error_code", "error_message"}``.

    ``code`` is ``None`` only when the body was not in the contract's shape
    (e.g. an HTML page from a reverse proxy in front of the server).
    """

    def __init__(self, code: str | None, message: str, http_status: int) -> None:
        self.code = code
        self.message = message
        self.http_status = http_status
        super().__init__(f"{code}: {message}" if code else f"HTTP {http_status}: {message}")


class AuthenticationError(DemanagerAPIError):
    """The token is missing, unknown, expired or its user is gone: log in again."""


class PermissionDenied(DemanagerAPIError):
    """The token is valid but may not act here (usually: another project)."""


class InvalidRequest(DemanagerAPIError):
    """The request was refused as malformed or out of range; sending it again will not help."""


class InstanceNotFound(DemanagerAPIError):
    """No live instance with that ID in the project."""


class NameTaken(DemanagerAPIError):
    """A live instance of the project already has that name."""


class QuotaExceeded(DemanagerAPIError):
    """The project (or the flavor) has as many instances as it may have."""


class StateConflict(DemanagerAPIError):
    """The instance's current status forbids the operation; wait or act differently."""


class CapacityExhausted(DemanagerAPIError):
    """The flavor (or the whole backend) has no room now; retry later."""


class RouteNotFound(DemanagerAPIError):
    """The URL matches no route: a wrong server URL, or a server without this extension."""


class ServerBusy(DemanagerAPIError):
    """The server timed out or is rate limiting; the same request may succeed later."""


class ServerError(DemanagerAPIError):
    """An unexpected fault on the server."""


def _codes(*numbers: str) -> list[str]:
    return [f"ModelArts.{n}" for n in numbers]


#: The one table from ``error_code`` to exception class (contract §7).
_BY_CODE: dict[str, type[DemanagerAPIError]] = {
    **dict.fromkeys(
        _codes("0201", "0202", "0212", "6201", "6203", "6608", "6620"),
        AuthenticationError,
    ),
    **dict.fromkeys(_codes("0210", "0108", "0112"), PermissionDenied),
    **dict.fromkeys(_codes("6309"), InstanceNotFound),
    **dict.fromkeys(_codes("6301"), NameTaken),
    **dict.fromkeys(_codes("6302", "0118", "0113"), QuotaExceeded),
    **dict.fromkeys(
        _codes("6304", "6305", "6306", "6307", "6308", "6326", "6327", "6333", "6357"),
        StateConflict,
    ),
    **dict.fromkeys(_codes("6329", "6360", "6200"), CapacityExhausted),
    **dict.fromkeys(_codes("2836"), RouteNotFound),
    **dict.fromkeys(_codes("6100", "6101"), ServerBusy),
}

#: For codes the table does not know, the HTTP status still says something useful.
_BY_STATUS: dict[int, type[DemanagerAPIError]] = {
    400: InvalidRequest,
    401: AuthenticationError,
    403: PermissionDenied,
    404: RouteNotFound,
    408: ServerBusy,
    429: ServerBusy,
}


def _class_for(code: str | None, http_status: int) -> type[DemanagerAPIError]:
    # The contract makes every authentication failure a 401 so clients can
    # refresh their token on the status alone; honour that before the code.
    if http_status == 401:
        return AuthenticationError
    if code is not None and code in _BY_CODE:
        return _BY_CODE[code]
    if http_status in _BY_STATUS:
        return _BY_STATUS[http_status]
    if http_status >= 500:
        return ServerError
    return DemanagerAPIError


def error_from_response(response: httpx.Response) -> DemanagerAPIError:
    """The typed exception for a non-2xx answer, whatever its body looks like."""
    code: str | None = None
    message = response.reason_phrase or "error"
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        if text:
            message = text[:200]
    else:
        if isinstance(body, dict):
            raw_code = body.get("error_code")
            raw_message = body.get("error_message", body.get("error_msg"))
            if isinstance(raw_code, str) and raw_code:
                code = raw_code
            if isinstance(raw_message, str) and raw_message:
                message = raw_message
    return _class_for(code, response.status_code)(code, message, response.status_code)
