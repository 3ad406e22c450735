"""``domain/validation.py`` edge cases, without a server (contract §2.1, §2.4, §5, §6.1)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from demanager import errors
from demanager.domain.catalog import Catalog, Pool
from demanager.domain.instance import AutoStop
from demanager.domain.lifecycle import InstanceStatus, Operation
from demanager.domain.validation import (
    CreateContext,
    bucket_dirs,
    validate_action,
    validate_create,
    validate_list,
    validate_update,
)

LAUNCH = {"command": ["true"]}
CATALOG = Catalog.from_mapping(
    {
        "workspaces": ["0", "ws"],
        "profiles": [
            {"id": "cpu", "flavor_type": "CPU", "launch": {"process": LAUNCH}},
            {"id": "gpu", "flavor_type": "GPU", "launch": {"process": LAUNCH}},
            {"id": "npu", "flavor_type": "Ascend", "launch": {"process": LAUNCH}},
        ],
        "flavors": [
            {"name": "c", "type": "CPU"},
            {"name": "a", "type": "ascend"},
            {"name": "evs-only", "type": "CPU", "storage_list": ["evs"]},
            {"name": "mine", "type": "CPU", "permitted_users": ["alice"]},
        ],
        "pools": [
            {"id": "p1", "name": "pool"},
            {"id": "cold", "ready": False},
            {"id": "theirs", "owner_project": "other"},
        ],
    }
)
CTX = CreateContext(catalog=CATALOG, user_name="alice", project_id="proj", object_storage=True)
BASE: dict[str, Any] = {
    "name": "nb",
    "profile_id": "cpu",
    "flavor": "c",
    "spec": {"storage": {"type": "evs"}},
}


def body(**changes: Any) -> dict[str, Any]:
    result = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = result
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return result


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"name": "ä"}, errors.ForbiddenCharacter),
        ({"name": "a\nb"}, errors.ForbiddenCharacter),
        ({"name": "١٢"}, errors.ForbiddenCharacter),  # not ASCII digits
        ({"name": "ǅ"}, errors.ForbiddenCharacter),
        ({"name": "x" * 65}, errors.InvalidValue),
        ({"description": "\x00"}, errors.ForbiddenCharacter),
        ({"description": "😀" * 513}, errors.InvalidValue),
        ({"flavor": "mine", "pool": {"id": "theirs"}}, errors.InvalidValue),  # other project's pool
        ({"pool": {"id": "cold"}}, errors.PoolInitialising),
        ({"profile_id": "npu", "flavor": "c"}, errors.FlavorTypeMismatch),
        (
            {
                "spec.storage": {"type": "obs", "location": {"path": "/bucket/"}},
                "flavor": "evs-only",
            },
            errors.UnsupportedStorage,
        ),
        ({"spec.storage.location": {"volume_size": 4096 + 1}}, errors.VolumeSizeOutOfRange),
        ({"spec.auto_stop": {"enable": True, "duration": 3599}}, errors.DurationOutOfRange),
        ({"ai_project": {"id": "a\x00"}}, errors.InvalidValue),
    ],
)
def test_create_rejects(changes: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        validate_create(body(**changes), CTX)


def test_create_rejects_obs_without_object_storage() -> None:
    ctx = CreateContext(catalog=CATALOG, user_name="alice", project_id="proj", object_storage=False)
    with pytest.raises(errors.UnsupportedStorage):
        validate_create(
            body(**{"spec.storage": {"type": "obs", "location": {"path": "/bkt/dir/"}}}), ctx
        )


def test_create_accepts_and_fills_defaults() -> None:
    request = validate_create(body(**{"spec.annotations": {"k": "v"}}), CTX)
    assert request.name == "nb" and request.description == ""
    assert request.storage.location.volume_size == 5
    assert request.auto_stop == AutoStop(enable=False, duration=None, prompt=True)
    assert request.workspace_id == "0" and request.pool_id is None
    assert request.ai_project_id == "default-ai-project"
    assert request.extend_storage is None
    assert dict(request.annotations) == {"k": "v"}


def test_create_is_case_insensitive_on_flavor_type() -> None:
    assert validate_create(body(profile_id="npu", flavor="a"), CTX).flavor == "a"


def test_permitted_flavor_for_its_user_only() -> None:
    assert validate_create(body(flavor="mine"), CTX).flavor == "mine"
    bob = CreateContext(catalog=CATALOG, user_name="bob", project_id="proj", object_storage=True)
    with pytest.raises(errors.FlavorNotPermitted):
        validate_create(body(flavor="mine"), bob)


def test_obsfs_mount_path_is_normalised() -> None:
    request = validate_create(
        body(
            pool={"id": "p1"},
            **{
                "spec.storage": {
                    "type": "obsfs",
                    "location": {"path": "/pfs/", "mount_path": "/home/ma-user/work/./a//b/"},
                }
            },
        ),
        CTX,
    )
    assert request.storage.location.mount_path == "/home/ma-user/work/a/b"
    assert request.storage.location.path == "/pfs/"
    assert request.storage.location.access_modes == "ReadWriteMany"


def test_extend_storage_mounts_must_differ_after_normalisation() -> None:
    extra = {"type": "obsfs", "location": {"path": "pfs2", "mount_path": "/home/ma-user/work/"}}
    with pytest.raises(errors.InvalidValue):
        validate_create(body(pool={"id": "p1"}, **{"spec.extend_storage": [extra]}), CTX)


@pytest.mark.parametrize(
    ("path", "dirs"),
    [
        ("/bucket/a/", ["bucket", "a"]),
        ("obs://bucket/a/b/", ["bucket", "a", "b"]),
        ("/bucket/", ["bucket"]),
    ],
)
def test_bucket_dirs(path: str, dirs: list[str]) -> None:
    assert bucket_dirs(path) == dirs


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"enable": True}, errors.DurationRequired),
        ({"enable": True, "duration": None}, errors.DurationRequired),
        ({"duration": 10}, None),  # disabled: dropped, not validated
        ({"enable": None, "duration": 7200}, None),
    ],
)
def test_update_auto_stop_rules(raw: dict[str, Any], expected: type[Exception] | None) -> None:
    current = AutoStop(enable=False, duration=None, prompt=True)
    if expected is not None:
        with pytest.raises(expected):
            validate_update(
                {"spec": {"auto_stop": raw}}, current=current, status=InstanceStatus.STOPPED
            )
    else:
        validate_update(
            {"spec": {"auto_stop": raw}}, current=current, status=InstanceStatus.STOPPED
        )


def test_update_merges_into_the_current_settings() -> None:
    current = AutoStop(enable=True, duration=7200, prompt=False)
    request = validate_update(
        {"spec": {"auto_stop": {"prompt": True}}}, current=current, status=InstanceStatus.RUNNING
    )
    assert request.auto_stop == AutoStop(enable=True, duration=7200, prompt=True)
    request = validate_update(
        {"spec": {"auto_stop": {"duration": 3600}}}, current=current, status=InstanceStatus.RUNNING
    )
    assert request.auto_stop == AutoStop(enable=True, duration=3600, prompt=False)
    with pytest.raises(errors.DurationOutOfRange):  # enabled: the merged duration is checked
        validate_update(
            {"spec": {"auto_stop": {"duration": 60}}},
            current=current,
            status=InstanceStatus.RUNNING,
        )
    request = validate_update({}, current=current, status=InstanceStatus.RUNNING)
    assert request.auto_stop is None and request.description is None


def test_update_immutable_message_names_status_and_field() -> None:
    with pytest.raises(errors.ImmutableField) as caught:
        validate_update(
            {"spec": {"annotations": {}}}, current=AutoStop(), status=InstanceStatus.STOPPED
        )
    assert "STOPPED" in caught.value.message and "spec.annotations" in caught.value.message


@pytest.mark.parametrize(
    ("raw", "result"),
    [
        ({"action": "start"}, Operation.START),
        ({"action": "dequeue", "x": 1}, Operation.DEQUEUE),
        ([], errors.InvalidPayload),
        ({}, errors.MissingField),
        ({"action": None}, errors.MissingField),
        ({"action": 1}, errors.WrongType),
        ({"action": "delete"}, errors.InvalidValue),
    ],
)
def test_validate_action(raw: Any, result: Any) -> None:
    if isinstance(result, Operation):
        assert validate_action(raw) is result
    else:
        with pytest.raises(result):
            validate_action(raw)


@pytest.mark.parametrize(
    ("params", "field", "value"),
    [
        ({}, "sortby", "name"),
        ({}, "limit", 0),
        ({}, "workspace_id", "0"),
        ({}, "show_self", True),
        ({"show_self": "FaLsE"}, "show_self", False),
        ({"order": "desc"}, "descending", True),
        ({"offset": "+7"}, "offset", 7),
        ({"offset": "-0"}, "offset", 0),
        ({"limit": "9" * 40}, "limit", 10**18),
        ({"status": "DELETED"}, "status", InstanceStatus.DELETED),
        ({"workspace_id": "ws"}, "workspace_id", "ws"),
        ({"ai_project": ""}, "ai_project", ""),
    ],
)
def test_validate_list(params: dict[str, str], field: str, value: Any) -> None:
    query = validate_list({"de_type": "Notebook", **params}, CATALOG)
    assert getattr(query, field) == value


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"de_type": ""}, errors.MissingField),
        ({"de_type": "notebook"}, errors.InvalidValue),
        ({"de_type": "Notebook", "sortby": "name "}, errors.InvalidSortField),
        ({"de_type": "Notebook", "offset": "٣"}, errors.WrongType),
        ({"de_type": "Notebook", "limit": "-1"}, errors.InvalidValue),
        ({"de_type": "Notebook", "limit": "-" + "9" * 40}, errors.InvalidValue),
        ({"de_type": "Notebook", "workspace_id": "nope"}, errors.UnknownWorkspace),
    ],
)
def test_validate_list_rejects(params: dict[str, str], error: type[Exception]) -> None:
    with pytest.raises(error):
        validate_list(params, CATALOG)


@pytest.mark.parametrize(
    ("storage", "pool"),
    [
        ({"type": "obs", "location": {"path": "/bucket/dir\x00x/"}}, None),
        ({"type": "obs", "location": {"path": "/bucket/dir\x07/"}}, None),
        (
            {
                "type": "obsfs",
                "location": {"path": "pfs-one", "mount_path": "/home/ma-user/work/a\x00"},
            },
            "pool-dedicated",
        ),
    ],
)
def test_control_characters_in_paths_are_refused(storage: dict[str, Any], pool: str | None) -> None:
    base = Catalog.from_mapping(
        {
            "profiles": [
                {"id": "p", "flavor_type": "CPU", "launch": {"process": {"command": ["x"]}}}
            ],
            "flavors": [{"name": "f", "type": "CPU", "storage_list": ["obs", "evs"]}],
        }
    )
    catalog = Catalog(base.profiles, base.flavors, {"pool-dedicated": Pool("pool-dedicated", "p")})
    body: dict[str, Any] = {
        "name": "n",
        "profile_id": "p",
        "flavor": "f",
        "spec": {"storage": storage},
    }
    if pool:
        body["pool"] = {"id": pool}
    ctx = CreateContext(catalog=catalog, user_name="u", project_id="p", object_storage=True)
    with pytest.raises(errors.InvalidValue):
        validate_create(body, ctx)
