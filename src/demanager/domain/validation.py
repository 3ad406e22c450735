"""Turn parsed JSON into domain requests, in the contract's check order.

Each function takes what ``json.loads`` produced and raises the first failure
as a domain error (contract §2.1, §2.4, §5, §6.1); the HTTP layer only maps
those errors to codes. Types are strict (§1.6): an integer is a JSON integer
and never a bool, a float or a string.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from demanager import errors
from demanager.domain.catalog import Catalog
from demanager.domain.instance import (
    DEFAULT_VOLUME_GB,
    MAX_AUTO_STOP_S,
    MAX_VOLUME_GB,
    MIN_AUTO_STOP_S,
    MIN_VOLUME_GB,
    WORK_DIR,
    AutoStop,
    CreateRequest,
    Location,
    Storage,
    UpdateRequest,
)
from demanager.domain.lifecycle import ACTIONS, InstanceStatus, Operation

NAME_RE = re.compile(r"[A-Za-z0-9_-]")
NAME_MAX = 64
DESCRIPTION_MAX = 512
DESCRIPTION_FORBIDDEN = frozenset("&<>\"'/\x00")
"""The contract's six characters, plus NUL, which no database can store in text."""
AI_PROJECT_MAX = 128
BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
STORAGE_TYPES = ("obs", "obsfs", "evs")
ACCESS_MODES = ("ReadOnlyMany", "ReadWriteMany")

_JSON_TYPE_NAMES = {str: "string", int: "integer", bool: "boolean", dict: "object", list: "array"}


def _present(body: Mapping[str, Any], key: str) -> bool:
    """A key with JSON ``null`` counts as absent (§1.6)."""
    return body.get(key) is not None


def _is(value: Any, kind: type) -> bool:
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _check_type(body: Mapping[str, Any], key: str, kind: type, path: str) -> None:
    if _present(body, key) and not _is(body[key], kind):
        raise errors.WrongType(path, _JSON_TYPE_NAMES[kind])


def require_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise errors.InvalidPayload("The request payload must be a JSON object.")
    return body


# --- create ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CreateContext:
    """What create validation needs to know about the deployment and the caller."""

    catalog: Catalog
    user_name: str
    project_id: str
    object_storage: bool
    """Whether an object-storage backend is configured (obs/obsfs usable)."""
    min_auto_stop: int = MIN_AUTO_STOP_S
    """Lower bound of auto-stop durations (a server setting, lowered only for tests)."""


def validate_create(raw: Any, ctx: CreateContext) -> CreateRequest:
    body = require_object(raw)
    for key in ("name", "profile_id", "flavor", "spec"):
        if not _present(body, key):
            raise errors.MissingField(key)
    _check_create_types(body)
    spec: dict[str, Any] = body["spec"]

    name: str = body["name"]
    _check_name(name)
    description: str = body.get("description") or ""
    _check_description(description)

    workspace_id = _object_id(body, "workspace") or "0"
    if workspace_id not in ctx.catalog.workspaces:
        raise errors.UnknownWorkspace(workspace_id)
    pool_id = _object_id(body, "pool") or None
    if pool_id is not None:
        pool = ctx.catalog.pools.get(pool_id)
        if pool is None or (pool.owner_project not in (None, ctx.project_id)):
            raise errors.InvalidValue("pool.id", f"Unknown pool '{pool_id}'.")
        if not pool.ready:
            raise errors.PoolInitialising(pool_id)

    profile = ctx.catalog.profiles.get(body["profile_id"])
    if profile is None:
        raise errors.InvalidValue("profile_id", f"Unknown profile '{body['profile_id']}'.")
    flavor = ctx.catalog.flavors.get(body["flavor"])
    if flavor is None:
        raise errors.UnknownFlavor(body["flavor"])
    if not flavor.permits(ctx.user_name, ctx.project_id):
        raise errors.FlavorNotPermitted(flavor.name)
    if profile.flavor_type.upper() != flavor.type.upper():
        raise errors.FlavorTypeMismatch(profile.flavor_type, flavor.type)

    if not _present(spec, "storage"):
        raise errors.StorageRequired()
    storage = _storage(spec["storage"], "spec.storage", ctx, flavor.storage_list, pool_id)
    extend = _extend_storage(spec, ctx, flavor.storage_list, pool_id, storage)
    auto_stop = _auto_stop_create(spec.get("auto_stop") or {}, ctx.min_auto_stop)
    annotations = dict(spec.get("annotations") or {})

    return CreateRequest(
        name=name,
        description=description,
        profile_id=profile.id,
        flavor=flavor.name,
        storage=storage,
        extend_storage=extend,
        auto_stop=auto_stop,
        annotations=annotations,
        workspace_id=workspace_id,
        pool_id=pool_id,
        ai_project_id=_ai_project_id(body),
    )


def _ai_project_id(body: Mapping[str, Any]) -> str:
    """Reserved and stored as sent (§2.1), within what the store can keep."""
    value = _object_id(body, "ai_project") or "default-ai-project"
    if len(value) > AI_PROJECT_MAX or "\x00" in value:
        raise errors.InvalidValue(
            "ai_project.id", f"At most {AI_PROJECT_MAX} characters, no NUL character."
        )
    return value


def _check_create_types(body: Mapping[str, Any]) -> None:
    for key in ("name", "profile_id", "flavor", "description"):
        _check_type(body, key, str, key)
    _check_type(body, "spec", dict, "spec")
    for key in ("workspace", "pool", "ai_project"):
        _check_type(body, key, dict, key)
        if _present(body, key):
            _check_type(body[key], "id", str, f"{key}.id")
    spec = body["spec"]
    _check_type(spec, "storage", dict, "spec.storage")
    if _present(spec, "storage"):
        _check_storage_types(spec["storage"], "spec.storage")
    _check_type(spec, "extend_storage", list, "spec.extend_storage")
    for i, item in enumerate(spec.get("extend_storage") or []):
        where = f"spec.extend_storage[{i}]"
        if not isinstance(item, dict):
            raise errors.WrongType(where, "object")
        _check_storage_types(item, where)
    _check_auto_stop_types(spec, "spec.auto_stop")
    _check_type(spec, "annotations", dict, "spec.annotations")
    for key, value in (spec.get("annotations") or {}).items():
        if not isinstance(value, str):
            raise errors.WrongType(f"spec.annotations.{key}", "string")


#: The location fields each storage type uses; the others are ignored whatever they hold.
_LOCATION_FIELDS: dict[str, tuple[tuple[str, type], ...]] = {
    "obs": (("path", str),),
    "obsfs": (("path", str), ("mount_path", str), ("access_modes", str)),
    "evs": (("volume_size", int),),
}


def _check_storage_types(storage: Mapping[str, Any], where: str) -> None:
    _check_type(storage, "type", str, f"{where}.type")
    _check_type(storage, "location", dict, f"{where}.location")
    location = storage.get("location") or {}
    for key, kind in _LOCATION_FIELDS.get(storage.get("type"), ()):  # type: ignore[arg-type]
        _check_type(location, key, kind, f"{where}.location.{key}")


def _check_auto_stop_types(spec: Mapping[str, Any], where: str) -> None:
    _check_type(spec, "auto_stop", dict, where)
    auto_stop = spec.get("auto_stop") or {}
    _check_type(auto_stop, "enable", bool, f"{where}.enable")
    _check_type(auto_stop, "duration", int, f"{where}.duration")
    _check_type(auto_stop, "prompt", bool, f"{where}.prompt")


def _check_name(name: str) -> None:
    for char in name:
        if not NAME_RE.fullmatch(char):
            raise errors.ForbiddenCharacter("name", char)
    if not 1 <= len(name) <= NAME_MAX:
        raise errors.InvalidValue("name", f"The length must be 1 to {NAME_MAX} characters.")


def _check_description(description: str) -> None:
    for char in description:
        if char in DESCRIPTION_FORBIDDEN:
            raise errors.ForbiddenCharacter("description", char)
    if len(description) > DESCRIPTION_MAX:
        raise errors.InvalidValue(
            "description", f"The length must be at most {DESCRIPTION_MAX} characters."
        )


def _object_id(body: Mapping[str, Any], key: str) -> str:
    value = body.get(key) or {}
    return str(value.get("id") or "")


def _storage(
    raw: Mapping[str, Any],
    where: str,
    ctx: CreateContext,
    allowed: tuple[str, ...],
    pool_id: str | None,
) -> Storage:
    if not _present(raw, "type"):
        raise errors.MissingField(f"{where}.type")
    kind = raw["type"]
    if kind not in STORAGE_TYPES:
        raise errors.UnsupportedStorage(f"'{kind}' is not one of obs, obsfs, evs.")
    if kind not in allowed and not (kind == "obsfs" and pool_id):
        raise errors.UnsupportedStorage(f"the flavor does not support '{kind}'.")
    if kind in ("obs", "obsfs") and not ctx.object_storage:
        raise errors.UnsupportedStorage("this deployment has no object storage.")
    if kind == "obsfs" and not pool_id:
        raise errors.UnsupportedStorage("'obsfs' is only available in a dedicated pool.")
    location: Mapping[str, Any] = raw.get("location") or {}
    if kind == "evs":
        return Storage("evs", _evs_location(location))
    if not location.get("path"):
        raise errors.PathRequired()
    if kind == "obs":
        return Storage("obs", Location(path=_obs_path(location["path"], where)))
    return Storage("obsfs", _obsfs_location(location, where))


def _evs_location(location: Mapping[str, Any]) -> Location:
    size = location.get("volume_size")
    if size is None:
        size = DEFAULT_VOLUME_GB
    if not MIN_VOLUME_GB <= size <= MAX_VOLUME_GB:
        raise errors.VolumeSizeOutOfRange(MIN_VOLUME_GB, MAX_VOLUME_GB)
    return Location(path=WORK_DIR, volume_size=size)


def _obs_path(path: str, where: str) -> str:
    if not path.endswith("/"):
        raise errors.PathNeedsSlash()
    inner = path[len("obs://") :] if path.startswith("obs://") else path
    if not inner.startswith("/") and not path.startswith("obs://"):
        raise errors.InvalidValue(f"{where}.location.path", "Write it as /bucket/dir/.")
    segments = inner.strip("/").split("/")
    if len(segments) == 1 and segments[0]:
        raise errors.PathIsBucketRoot()
    if any(not s for s in segments) or "//" in inner:
        raise errors.InvalidValue(f"{where}.location.path", "Empty path segment.")
    if not BUCKET_RE.fullmatch(segments[0]) or ".." in segments:
        raise errors.InvalidValue(f"{where}.location.path", "Invalid bucket name.")
    if _has_control(path):
        raise errors.InvalidValue(f"{where}.location.path", "No control characters.")
    return path


def bucket_dirs(path: str) -> list[str]:
    """The segments of an obs path (``/bucket/a/b/`` or ``obs://bucket/a/b/``)."""
    inner = path[len("obs://") :] if path.startswith("obs://") else path
    return inner.strip("/").split("/")


def _has_control(text: str) -> bool:
    """Control characters (NUL above all) can name no folder a backend could create."""
    return any(ord(c) < 32 or ord(c) == 127 for c in text)


def _obsfs_location(location: Mapping[str, Any], where: str) -> Location:
    name = location["path"].strip("/")
    if not name or "/" in name or not BUCKET_RE.fullmatch(name):
        raise errors.InvalidValue(
            f"{where}.location.path", "Give a parallel file system name without sub-directories."
        )
    mount = location.get("mount_path") or WORK_DIR
    normal = posixpath.normpath(mount)
    outside = not (normal == WORK_DIR or normal.startswith(WORK_DIR + "/"))
    if ".." in mount.split("/") or outside or _has_control(mount):
        raise errors.InvalidValue(f"{where}.location.mount_path", f"It must lie in {WORK_DIR}.")
    modes = location.get("access_modes") or "ReadWriteMany"
    if modes not in ACCESS_MODES:
        raise errors.InvalidValue(f"{where}.location.access_modes")
    return Location(path=location["path"], mount_path=normal, access_modes=modes)


def _extend_storage(
    spec: Mapping[str, Any],
    ctx: CreateContext,
    allowed: tuple[str, ...],
    pool_id: str | None,
    primary: Storage,
) -> tuple[Storage, ...] | None:
    raw = spec.get("extend_storage")
    if raw is None:
        return None
    mounts = [primary.location.mount_path or WORK_DIR]
    result = []
    for i, item in enumerate(raw):
        where = f"spec.extend_storage[{i}]"
        if _present(item, "type") and item["type"] != "obsfs":
            raise errors.UnsupportedStorage("extended storage must be 'obsfs'.")
        if not pool_id:
            raise errors.UnsupportedStorage("extended storage needs a dedicated pool.")
        storage = _storage(item, where, ctx, allowed, pool_id)
        mount = storage.location.mount_path or WORK_DIR
        if mount in mounts:
            raise errors.InvalidValue(f"{where}.location.mount_path", "Mount paths must differ.")
        mounts.append(mount)
        result.append(storage)
    return tuple(result)


def _auto_stop_create(raw: Mapping[str, Any], low: int) -> AutoStop:
    enable = bool(raw.get("enable", False))
    prompt = raw.get("prompt")
    return AutoStop(
        enable=enable,
        duration=_duration(enable, raw.get("duration"), low),
        prompt=True if prompt is None else prompt,
    )


def _duration(enable: bool, duration: int | None, low: int) -> int | None:
    if enable:
        if duration is None:
            raise errors.DurationRequired()
        if not low <= duration <= MAX_AUTO_STOP_S:
            raise errors.DurationOutOfRange(low, MAX_AUTO_STOP_S)
        return duration
    # Disabled: clients send 0 here; keep a sensible value, drop the rest (§3.12).
    if duration is not None and low <= duration <= MAX_AUTO_STOP_S:
        return duration
    return None


# --- update ---------------------------------------------------------------------------

IMMUTABLE_TOP = ("name", "profile_id", "flavor", "workspace", "pool", "ai_project")
IMMUTABLE_SPEC = ("storage", "extend_storage", "annotations")


def validate_update(
    raw: Any, *, current: AutoStop, status: InstanceStatus, min_auto_stop: int = MIN_AUTO_STOP_S
) -> UpdateRequest:
    body = require_object(raw)
    _check_type(body, "description", str, "description")
    _check_type(body, "spec", dict, "spec")
    spec: Mapping[str, Any] = body.get("spec") or {}
    _check_auto_stop_types(spec, "spec.auto_stop")

    description = body.get("description")
    if description is not None:
        _check_description(description)
    auto_stop = None
    if _present(spec, "auto_stop"):
        auto_stop = _merge_auto_stop(current, spec["auto_stop"], min_auto_stop)

    for key in IMMUTABLE_TOP:
        if _present(body, key):
            raise errors.ImmutableField(status, key)
    for key in IMMUTABLE_SPEC:
        if _present(spec, key):
            raise errors.ImmutableField(status, f"spec.{key}")
    return UpdateRequest(description=description, auto_stop=auto_stop)


def _merge_auto_stop(current: AutoStop, raw: Mapping[str, Any], low: int) -> AutoStop:
    if raw.get("enable") is True and raw.get("duration") is None:
        raise errors.DurationRequired()
    enable = current.enable if raw.get("enable") is None else bool(raw["enable"])
    duration = current.duration if raw.get("duration") is None else raw["duration"]
    prompt = current.prompt if raw.get("prompt") is None else bool(raw["prompt"])
    return AutoStop(enable=enable, duration=_duration(enable, duration, low), prompt=prompt)


# --- action ---------------------------------------------------------------------------


def validate_action(raw: Any) -> Operation:
    body = require_object(raw)
    if not _present(body, "action"):
        raise errors.MissingField("action")
    action = body["action"]
    if not isinstance(action, str):
        raise errors.WrongType("action", "string")
    if action not in ACTIONS:
        raise errors.InvalidValue("action", "Use start, stop, restart, queue or dequeue.")
    return Operation(action)


MAX_EXTENSION_REQUEST_S = 7 * 86_400


def validate_extension(raw: Any) -> int:
    """The seconds of an extension request (``{"seconds": N}``)."""
    body = require_object(raw)
    if not _present(body, "seconds"):
        raise errors.MissingField("seconds")
    seconds = body["seconds"]
    if not _is(seconds, int):
        raise errors.WrongType("seconds", "integer")
    if not 1 <= seconds <= MAX_EXTENSION_REQUEST_S:
        raise errors.InvalidValue(
            "seconds", f"Give a number of seconds from 1 to {MAX_EXTENSION_REQUEST_S}."
        )
    unknown = sorted(set(body) - {"seconds"})
    if unknown:
        raise errors.InvalidValue(unknown[0][:64], "Only 'seconds' may be given.")
    return int(seconds)


# --- list -----------------------------------------------------------------------------

SORT_FIELDS = ("name", "creation_timestamp")
_INT_RE = re.compile(r"^[+-]?[0-9]+$")
_MAX_DIGITS = 18
_HUGE = 10**_MAX_DIGITS


@dataclass(frozen=True)
class ListQuery:
    status: InstanceStatus | None = None
    sortby: str = "name"
    descending: bool = False
    offset: int = 0
    limit: int = 0
    workspace_id: str = "0"
    show_self: bool = True
    ai_project: str | None = None
    pool_id: str | None = None


def validate_list(params: Mapping[str, str], catalog: Catalog) -> ListQuery:
    """``params`` holds the first value of each query parameter (§6.1)."""
    de_type = params.get("de_type")
    if not de_type:
        raise errors.MissingField("de_type")
    if de_type != "Notebook":
        raise errors.InvalidValue("de_type", "Only 'Notebook' is supported.")
    provision = params.get("provision_type")
    if provision is not None and provision != "Docker":
        raise errors.InvalidValue("provision_type", "Only 'Docker' is supported.")
    status = params.get("status")
    if status is not None and status not in InstanceStatus.__members__:
        raise errors.InvalidValue("status")
    sortby = params.get("sortby", "name")
    if sortby not in SORT_FIELDS:
        raise errors.InvalidSortField(sortby)
    order = params.get("order", "asc")
    if order not in ("asc", "desc"):
        raise errors.InvalidValue("order", "Use asc or desc.")
    offset = _non_negative(params, "offset")
    limit = _non_negative(params, "limit")
    workspace_id = params.get("workspace_id", "0")
    if workspace_id not in catalog.workspaces:
        raise errors.UnknownWorkspace(workspace_id)
    show_self = params.get("show_self", "true").lower()
    if show_self not in ("true", "false"):
        raise errors.InvalidValue("show_self", "Use true or false.")
    return ListQuery(
        status=InstanceStatus(status) if status else None,
        sortby=sortby,
        descending=order == "desc",
        offset=offset,
        limit=limit,
        workspace_id=workspace_id,
        show_self=show_self == "true",
        ai_project=params.get("ai_project"),
        pool_id=params.get("pool_id"),
    )


def _non_negative(params: Mapping[str, str], key: str) -> int:
    raw = params.get(key)
    if raw is None:
        return 0
    if not _INT_RE.fullmatch(raw):
        raise errors.WrongType(key, "integer")
    if raw.startswith("-") and raw.strip("-0"):
        raise errors.InvalidValue(key, "It must not be negative.")
    # Past any real count anyway; also keeps int() clear of its digit limit.
    digits = raw.lstrip("+-").lstrip("0")
    return int(digits) if 0 < len(digits) <= _MAX_DIGITS else (_HUGE if digits else 0)
