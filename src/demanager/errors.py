"""The domain's exceptions.

Every failure a caller can cause or observe is one class here; ``api/errors.py``
is the single table that maps each class to an HTTP status and a
``ModelArts.xxxx`` code. Nothing here knows about HTTP.

    DemanagerError
    ├── RequestError                 the caller sent something wrong
    │   ├── InvalidPayload           body not a JSON object            (6400)
    │   ├── MissingField             mandatory field absent            (6335)
    │   ├── WrongType                JSON type mismatch                (6332)
    │   ├── ForbiddenCharacter       bad character in name/description (6334)
    │   ├── InvalidValue             bad length, enum, shape           (6336)
    │   ├── UnknownWorkspace                                           (0102)
    │   ├── PoolInitialising                                           (6355)
    │   ├── UnknownFlavor                                              (6323)
    │   ├── FlavorNotPermitted                                         (6328)
    │   ├── FlavorTypeMismatch                                         (6330)
    │   ├── StorageRequired                                            (6316)
    │   ├── UnsupportedStorage                                         (6324)
    │   ├── PathRequired                                               (6317)
    │   ├── PathNeedsSlash                                             (6318)
    │   ├── PathIsBucketRoot                                           (6358)
    │   ├── ObjectStorageCredentialsMissing                            (6319)
    │   ├── ObjectStorageAccessError: bucket missing, access refused   (6320)
    │   ├── VolumeSizeOutOfRange                                       (6331)
    │   ├── DurationRequired                                           (6348)
    │   ├── DurationOutOfRange                                         (6349)
    │   ├── ExtensionRefused: past the operator's extension limit       (6349)
    │   ├── ImmutableField                                             (6347)
    │   └── InvalidSortField                                           (6303)
    ├── ConflictError                the request is valid but the state forbids it
    │   ├── NameTaken (6301)  InstanceQuotaReached (6302)  FlavorQuotaReached (0118)
    │   ├── FlavorSoldOut (6329)  NotEnoughResources (6360)
    │   ├── ProjectFrozen: a create in a frozen project                (6326)
    │   └── StateError: StopBeforeDelete (6304) AlreadyRunning (6305)
    │       InstanceStarting (6306) AlreadyStopped (6307) InstanceStopping (6308)
    │       NotRunning (6327) NotAnswering (6327) BeingRestored (6333) OperationNotAllowed (6357)
    │       InstanceFrozen (6326) NothingToExtend (6357)
    ├── InstanceNotFound                                               (6309)
    ├── AuthError: TokenMissing (0201) TokenExpired (0202) TokenInvalid (6620)
    │   TokenWithoutProject (0212) UserUnavailable (6608)
    │   LoginFailed: a password sign-in failed, whatever the reason      (6620)
    │   SignInRefused: the password was right, the scope cannot be granted
    │   LoginThrottled: too many failed sign-ins, retry after ``retry_after`` s
    │   TokenNotFound: a token named for inspection is not valid (Keystone: 404)
    ├── ProjectMismatch                                                (0210)
    ├── IdentityError                operator commands: UserExists, UnknownUser
    ├── StorageAdminError            operator commands (``demanager storage``): BucketTaken,
    │   InvalidBucketName; StorageKeysUnreadable (a caller sees 6319, the log why)
    ├── Busy                         store contention, retry           (6101)
    ├── ConcurrentUpdate             an optimistic write lost its race; reload, retry
    ├── LeaseLost                    the engine no longer holds an instance: let go
    ├── InternalError                a failure the caller cannot fix   (6102, 500)
    └── BackendError                 raised by backends, never reaches a caller
        ├── TransientBackendError    retry after ``retry_after`` seconds
        └── PermanentBackendError    mark the instance failed with ``code``
"""

from __future__ import annotations


class DemanagerError(Exception):
    """Base of every demanager error; ``message`` is safe to show a caller."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class RequestError(DemanagerError):
    pass


class InvalidPayload(RequestError):
    pass


class MissingField(RequestError):
    def __init__(self, field: str) -> None:
        super().__init__(f"The '{field}' parameter is required.")
        self.field = field


class WrongType(RequestError):
    def __init__(self, field: str, expected: str) -> None:
        super().__init__(f"The parameter '{field}' must be of type {expected}.")
        self.field = field


class ForbiddenCharacter(RequestError):
    def __init__(self, field: str, char: str) -> None:
        super().__init__(f"The character '{char}' is not allowed in '{field}'.")
        self.field = field


class InvalidValue(RequestError):
    def __init__(self, field: str, detail: str = "") -> None:
        text = f"The value of '{field}' is incorrect."
        super().__init__(f"{text} {detail}".strip())
        self.field = field


class UnknownWorkspace(RequestError):
    def __init__(self, workspace_id: str) -> None:
        super().__init__(f"The workspace '{workspace_id}' does not exist.")


class PoolInitialising(RequestError):
    def __init__(self, pool_id: str) -> None:
        super().__init__(f"The pool '{pool_id}' is still initialising; retry in a minute.")


class UnknownFlavor(RequestError):
    def __init__(self, flavor: str) -> None:
        super().__init__(f"The flavor '{flavor}' is not supported.")


class FlavorNotPermitted(RequestError):
    def __init__(self, flavor: str) -> None:
        super().__init__(f"You have no permission to use the flavor '{flavor}'.")


class FlavorTypeMismatch(RequestError):
    def __init__(self, profile_type: str, flavor_type: str) -> None:
        super().__init__(
            f"The profile's flavor type {profile_type} differs "
            f"from the flavor's type {flavor_type}."
        )


class StorageRequired(RequestError):
    def __init__(self) -> None:
        super().__init__("The 'storage' parameter is required to create a notebook.")


class UnsupportedStorage(RequestError):
    def __init__(self, detail: str) -> None:
        super().__init__(f"The storage type is not supported: {detail}")


class PathRequired(RequestError):
    def __init__(self) -> None:
        super().__init__("The 'path' parameter is required for OBS storage.")


class PathNeedsSlash(RequestError):
    def __init__(self) -> None:
        super().__init__("The 'path' parameter must end with a slash (/).")


class PathIsBucketRoot(RequestError):
    def __init__(self) -> None:
        super().__init__("The 'path' parameter cannot be a bucket root; use a directory in it.")


class ObjectStorageCredentialsMissing(RequestError):
    def __init__(self) -> None:
        super().__init__(
            "The object storage has no access key (AK/SK) in the global settings."
        )


class ObjectStorageAccessError(RequestError):
    """A bucket could not be used: it does not exist, or the credentials are refused.

    The message names the bucket and the reason, never the credentials."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"OBS access error: {detail}")
        self.detail = detail


class VolumeSizeOutOfRange(RequestError):
    def __init__(self, low: int, high: int) -> None:
        super().__init__(f"The EVS size must be between {low} GB and {high} GB.")


class DurationRequired(RequestError):
    def __init__(self) -> None:
        super().__init__("The 'duration' parameter is required to enable auto stop.")


class DurationOutOfRange(RequestError):
    def __init__(self, low: int, high: int) -> None:
        super().__init__(f"The 'duration' parameter must be between {low} and {high}.")


class ExtensionRefused(RequestError):
    """An extension of a run past what the operator allows (``message`` says how much is
    left)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)


class ImmutableField(RequestError):
    def __init__(self, status: str, field: str) -> None:
        super().__init__(f"In status {status} the parameter '{field}' cannot be changed.")


class InvalidSortField(RequestError):
    def __init__(self, field: str) -> None:
        super().__init__(f"The field '{field}' cannot be used for sorting.")


class ConflictError(DemanagerError):
    pass


class NameTaken(ConflictError):
    def __init__(self, name: str) -> None:
        super().__init__(f"The instance '{name}' already exists.")


class InstanceQuotaReached(ConflictError):
    def __init__(self, quota: int) -> None:
        super().__init__(f"The number of instances has reached its maximum ({quota}).")


class FlavorQuotaReached(ConflictError):
    def __init__(self, flavor: str, quota: int) -> None:
        super().__init__(f"Quota insufficient: instances of {flavor} over the limit ({quota}).")


class FlavorSoldOut(ConflictError):
    def __init__(self, flavor: str) -> None:
        super().__init__(f"The flavor '{flavor}' is sold out.")


class NotEnoughResources(ConflictError):
    def __init__(self, flavor: str) -> None:
        super().__init__(f"Not enough resources to start an instance of '{flavor}'; retry later.")


class StateError(ConflictError):
    """An operation the instance's current status does not allow.

    ``template`` may name ``{status}`` and ``{operation}``.
    """

    template = "Cannot {operation} the instance in status {status}."

    def __init__(self, status: str, operation: str) -> None:
        super().__init__(self.template.format(status=status, operation=operation))
        self.status = status
        self.operation = operation


class StopBeforeDelete(StateError):
    template = "Stop the instance before deleting it (status {status})."


class AlreadyRunning(StateError):
    template = "The instance is already running."


class InstanceStarting(StateError):
    template = "The instance is starting; cannot {operation} it now."


class AlreadyStopped(StateError):
    template = "The instance is already stopped."


class InstanceStopping(StateError):
    template = "The instance is stopping; cannot {operation} it now."


class NotRunning(StateError):
    template = "The instance is not running (status {status}); cannot {operation} it."


class NotAnswering(NotRunning):
    """RUNNING in the store, but its notebook server refuses connections (the engine
    notices and restarts it)."""

    template = "The notebook is not answering right now (status {status}); retry in a moment."


class BeingRestored(StateError):
    template = "The notebook is being restored; wait and retry."


class OperationNotAllowed(StateError):
    template = (
        "Operation {operation} is not allowed in status {status}: another operation "
        "is running or the instance is already in the target state."
    )


class NothingToExtend(OperationNotAllowed):
    template = (
        "Nothing is going to stop the instance: it has no auto-stop, idle timeout or "
        "lifetime limit to postpone."
    )


class InstanceFrozen(StateError):
    template = "The instance is frozen."


class ProjectFrozen(ConflictError):
    def __init__(self, project_id: str) -> None:
        super().__init__(f"The project '{project_id}' is frozen; no instance can be created in it.")
        self.project_id = project_id


class InstanceNotFound(DemanagerError):
    def __init__(self, instance_id: str) -> None:
        super().__init__(f"The instance '{instance_id}' does not exist.")


class AuthError(DemanagerError):
    pass


class TokenMissing(AuthError):
    def __init__(self) -> None:
        super().__init__("The request carries no X-Auth-Token.")


class TokenExpired(AuthError):
    def __init__(self) -> None:
        super().__init__("The token has expired.")


class TokenInvalid(AuthError):
    def __init__(self) -> None:
        super().__init__("The user token is invalid; refresh it.")


class TokenWithoutProject(AuthError):
    def __init__(self) -> None:
        super().__init__("The token is not bound to a project.")


class UserUnavailable(AuthError):
    def __init__(self) -> None:
        super().__init__("The user information could not be obtained.")


class LoginFailed(AuthError):
    def __init__(self) -> None:
        super().__init__("The user name or password is wrong.")


class SignInRefused(AuthError):
    """Keystone sign-in: the request is well formed and the credentials may be right,
    but no project-bound token can be issued for it (unsupported method, domain or
    system scope, a project the user is not a member of)."""


class LoginThrottled(AuthError):
    def __init__(self, retry_after: int) -> None:
        super().__init__("Too many failed sign-in attempts; retry later.")
        self.retry_after = retry_after


class TokenNotFound(AuthError):
    """The token a caller asked about (Keystone's ``X-Subject-Token``) is unknown,
    expired, revoked, or not one the caller may see."""

    def __init__(self) -> None:
        super().__init__("Could not find token.")


class IdentityError(DemanagerError):
    pass


class UserExists(IdentityError):
    def __init__(self, name: str) -> None:
        super().__init__(f"A user named {name!r} already exists.")


class UnknownUser(IdentityError):
    def __init__(self, name: str) -> None:
        super().__init__(f"No user named {name!r} in that project.")


class StorageAdminError(DemanagerError):
    pass


class BucketTaken(StorageAdminError):
    def __init__(self, bucket: str, project_id: str) -> None:
        super().__init__(
            f"The bucket {bucket!r} is granted to project {project_id!r}; "
            "move it with --move."
        )
        self.bucket = bucket
        self.project_id = project_id


class InvalidBucketName(StorageAdminError):
    def __init__(self, bucket: str) -> None:
        super().__init__(
            f"{bucket!r} is not a bucket name: 3 to 63 lowercase letters, digits, '.' and "
            "'-', beginning and ending with a letter or digit."
        )


class StorageKeysUnreadable(StorageAdminError):
    """The server key changed since the project's keys were set: a caller cannot fix it;
    to one the project has no usable keys (6319), and the log says why."""

    def __init__(self, project_id: str) -> None:
        super().__init__(
            f"The object-storage keys of project {project_id!r} cannot be decrypted with "
            "this server's key (DEMANAGER_SECRET_KEY or server.key changed since they were "
            "set); set them again with `demanager storage keys set`."
        )
        self.project_id = project_id


class ProjectMismatch(DemanagerError):
    def __init__(self) -> None:
        super().__init__("The project ID in the URL does not match the token's project.")


class InternalError(DemanagerError):
    """Something failed that the caller cannot fix; details go to the log only."""

    def __init__(self) -> None:
        super().__init__("The server could not process the request.")


class Busy(DemanagerError):
    def __init__(self) -> None:
        super().__init__("The system is busy; retry later.")


class ConcurrentUpdate(DemanagerError):
    """An optimistic-concurrency write lost its race; the caller reloads and retries."""


class LeaseLost(DemanagerError):
    """An engine write was refused because the writer no longer holds the instance's
    lease (it ran out, or another replica took it): the writer must stop driving it."""


class BackendError(DemanagerError):
    pass


class TransientBackendError(BackendError):
    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentBackendError(BackendError):
    """A failure retrying cannot mend; ``code`` goes to ``failed_reasons``."""

    def __init__(self, message: str, code: str = "ModelArts.6361") -> None:
        super().__init__(message)
        self.code = code
