"""The one table from domain errors to HTTP status and ``ModelArts.xxxx`` code.

It is wire data with no web framework in it, so both the API (``api/errors.py``)
and the notebook proxy answer every error the same way.
"""

from __future__ import annotations

from demanager import errors as e

#: Looked up along the exception's MRO, most specific class first.
ERROR_TABLE: dict[type[Exception], tuple[int, str]] = {
    e.InvalidPayload: (400, "ModelArts.6400"),
    e.MissingField: (400, "ModelArts.6335"),
    e.WrongType: (400, "ModelArts.6332"),
    e.ForbiddenCharacter: (400, "ModelArts.6334"),
    e.InvalidValue: (400, "ModelArts.6336"),
    e.UnknownWorkspace: (400, "ModelArts.0102"),
    e.PoolInitialising: (400, "ModelArts.6355"),
    e.UnknownFlavor: (400, "ModelArts.6323"),
    e.FlavorNotPermitted: (400, "ModelArts.6328"),
    e.FlavorTypeMismatch: (400, "ModelArts.6330"),
    e.StorageRequired: (400, "ModelArts.6316"),
    e.UnsupportedStorage: (400, "ModelArts.6324"),
    e.PathRequired: (400, "ModelArts.6317"),
    e.PathNeedsSlash: (400, "ModelArts.6318"),
    e.PathIsBucketRoot: (400, "ModelArts.6358"),
    e.ObjectStorageCredentialsMissing: (400, "ModelArts.6319"),
    e.ObjectStorageAccessError: (400, "ModelArts.6320"),
    e.VolumeSizeOutOfRange: (400, "ModelArts.6331"),
    e.DurationRequired: (400, "ModelArts.6348"),
    e.DurationOutOfRange: (400, "ModelArts.6349"),
    e.ExtensionRefused: (400, "ModelArts.6349"),
    e.ImmutableField: (400, "ModelArts.6347"),
    e.InvalidSortField: (400, "ModelArts.6303"),
    e.RequestError: (400, "ModelArts.6600"),
    e.NameTaken: (400, "ModelArts.6301"),
    e.InstanceQuotaReached: (400, "ModelArts.6302"),
    e.FlavorQuotaReached: (400, "ModelArts.0118"),
    e.FlavorSoldOut: (400, "ModelArts.6329"),
    e.NotEnoughResources: (400, "ModelArts.6360"),
    e.StopBeforeDelete: (400, "ModelArts.6304"),
    e.AlreadyRunning: (400, "ModelArts.6305"),
    e.InstanceStarting: (400, "ModelArts.6306"),
    e.AlreadyStopped: (400, "ModelArts.6307"),
    e.InstanceStopping: (400, "ModelArts.6308"),
    e.NotRunning: (400, "ModelArts.6327"),
    e.BeingRestored: (400, "ModelArts.6333"),
    e.OperationNotAllowed: (400, "ModelArts.6357"),
    e.InstanceFrozen: (400, "ModelArts.6326"),
    e.ProjectFrozen: (400, "ModelArts.6326"),
    e.ConflictError: (400, "ModelArts.6357"),
    e.InstanceNotFound: (400, "ModelArts.6309"),
    e.TokenMissing: (401, "ModelArts.0201"),
    e.TokenExpired: (401, "ModelArts.0202"),
    e.TokenInvalid: (401, "ModelArts.6620"),
    e.TokenWithoutProject: (401, "ModelArts.0212"),
    e.UserUnavailable: (401, "ModelArts.6608"),
    e.LoginFailed: (401, "ModelArts.6620"),
    e.ProjectMismatch: (403, "ModelArts.0210"),
    e.Busy: (429, "ModelArts.6101"),
    e.InternalError: (500, "ModelArts.6102"),
}

INTERNAL = (500, "ModelArts.6102")
NOT_FOUND = (404, "ModelArts.2836")
METHOD_NOT_ALLOWED = (405, "ModelArts.2803")
#: The contract has no 413 code; 6400 is its code for a body that is "too large" (§7.2),
#: answered with the status HTTP has for it so that clients and proxies can tell.
PAYLOAD_TOO_LARGE = (413, "ModelArts.6400")
RATE_LIMITED = (429, "ModelArts.6101")


def lookup(exc: Exception) -> tuple[int, str]:
    for cls in type(exc).__mro__:
        if cls in ERROR_TABLE:
            return ERROR_TABLE[cls]
    return INTERNAL


