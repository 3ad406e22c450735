"""Create: every validation rule of contract §2.1, its order, and "nothing is stored".

Each case sends one body to a fresh project of the shared server and checks the
error code, the error shape, and that the project still holds no instance.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.api.helpers import (
    CPU_FLAVOR,
    CPU_PROFILE,
    DEDICATED_POOL,
    DROP,
    GPU_PROFILE,
    OBS_STORAGE,
    OBSFS_STORAGE,
    WORK_DIR,
    WORKSPACES,
    assert_error,
    build,
    create,
    ok,
    remove,
    stored_count,
)
from tests.conftest import client_for
from tests.server import ServerProcess

OBS = build(**{"spec.storage": OBS_STORAGE})
OBSFS = build(**{"pool": {"id": DEDICATED_POOL}, "spec.storage": OBSFS_STORAGE})
EXT = {"type": "obsfs", "location": {"path": "ref-pfs", "mount_path": f"{WORK_DIR}/ref"}}


def case(code: str, base: dict[str, Any] | None = None, /, **changes: Any) -> Any:
    return pytest.param(build(base, **changes), code, id=f"{code}-{_label(changes)}")


def _label(changes: dict[str, Any]) -> str:
    return ",".join(f"{k}={'DROP' if v is DROP else repr(v)}"[:60]
                    for k, v in changes.items()) or "base"


REJECTED = [
    # name
    case("6335", name=DROP),
    case("6335", name=None),
    case("6334", name="a b"),
    case("6334", name="naïve"),
    case("6334", name="a.b"),
    case("6334", name="a/b"),
    case("6334", name="名字"),
    case("6336", name=""),
    case("6336", name="a" * 65),
    case("6332", name=5),
    case("6332", name=True),
    case("6332", name=["nb"]),
    # profile_id
    case("6335", profile_id=DROP),
    case("6335", profile_id=None),
    case("6336", profile_id="no such profile"),
    case("6336", profile_id="multi-engine 1.0 (python3)-cpu"),
    case("6332", profile_id=7),
    # description
    *[case("6334", description=f"a{c}b") for c in "&<>\"'/"],
    case("6334", description="nul\x00char"),
    case("6336", description="x" * 513),
    case("6336", description="é" * 513),
    case("6332", description=5),
    case("6332", description=["x"]),
    # flavor
    case("6335", flavor=DROP),
    case("6335", flavor=None),
    case("6323", flavor="modelarts.vm.cpu.nope"),
    case("6323", flavor="MODELARTS.VM.CPU.2U"),
    case("6328", flavor="modelarts.vm.cpu.restricted"),
    case("6329", flavor="modelarts.vm.cpu.soldout"),
    case("6330", profile_id=GPU_PROFILE),
    case("6330", flavor="modelarts.kat1.xlarge"),
    case("6332", flavor=2),
    # spec
    case("6335", spec=DROP),
    case("6335", spec=None),
    case("6332", spec="evs"),
    case("6332", spec=[]),
    # workspace
    case("0102", workspace={"id": "no-such-workspace"}),
    case("6332", workspace={"id": 0}),
    case("6332", workspace="0"),
    # pool
    case("6336", pool={"id": "no-such-pool"}),
    case("6355", pool={"id": "pool-warming"}),
    case("6332", pool={"id": 1}),
    case("6332", pool="pool-dedicated"),
    # ai_project
    case("6332", ai_project={"id": 1}),
    case("6332", ai_project="x"),
    case("6336", ai_project={"id": "x" * 129}),
    # spec.storage
    case("6316", **{"spec.storage": DROP}),
    case("6316", **{"spec.storage": None}),
    case("6332", **{"spec.storage": "evs"}),
    case("6335", **{"spec.storage": {}}),
    case("6335", **{"spec.storage": {"type": None}}),
    case("6332", **{"spec.storage.type": 1}),
    case("6324", **{"spec.storage.type": "nfs"}),
    case("6324", **{"spec.storage.type": "EVS"}),
    case("6324", **{"spec.storage.type": ""}),
    case("6324", **{"spec.storage": OBSFS_STORAGE}),  # obsfs outside a dedicated pool
    case("6324", flavor="modelarts.vm.cpu.obs-only"),  # evs not in the flavor's storage_list
    case("6332", **{"spec.storage.location": "somewhere"}),
    # evs volume_size
    case("6331", **{"spec.storage.location.volume_size": 4}),
    case("6331", **{"spec.storage.location.volume_size": 4097}),
    case("6331", **{"spec.storage.location.volume_size": -5}),
    case("6332", **{"spec.storage.location.volume_size": "10"}),
    case("6332", **{"spec.storage.location.volume_size": 10.0}),
    case("6332", **{"spec.storage.location.volume_size": True}),
    # obs location and path
    case("6317", OBS, **{"spec.storage.location": DROP}),
    case("6317", OBS, **{"spec.storage.location": None}),
    case("6317", OBS, **{"spec.storage.location": {}}),
    case("6317", OBS, **{"spec.storage.location.path": ""}),
    case("6317", OBS, **{"spec.storage.location.path": None}),
    case("6318", OBS, **{"spec.storage.location.path": "/bucket-a/notebooks"}),
    case("6318", OBS, **{"spec.storage.location.path": "obs://bucket-a/notebooks"}),
    case("6318", OBS, **{"spec.storage.location.path": "/bucket-a"}),
    case("6358", OBS, **{"spec.storage.location.path": "/bucket-a/"}),
    case("6358", OBS, **{"spec.storage.location.path": "obs://bucket-a/"}),
    case("6336", OBS, **{"spec.storage.location.path": "/bucket-a//notebooks/"}),
    case("6336", OBS, **{"spec.storage.location.path": "/bucket-a/a//b/"}),
    case("6336", OBS, **{"spec.storage.location.path": "/"}),
    case("6336", OBS, **{"spec.storage.location.path": "//"}),
    case("6336", OBS, **{"spec.storage.location.path": "/Bucket-A/dir/"}),
    case("6336", OBS, **{"spec.storage.location.path": "/ab/dir/"}),
    case("6336", OBS, **{"spec.storage.location.path": f"/{'b' * 64}/dir/"}),
    case("6336", OBS, **{"spec.storage.location.path": "/-bucket/dir/"}),
    case("6336", OBS, **{"spec.storage.location.path": "/bucket-/dir/"}),
    case("6336", OBS, **{"spec.storage.location.path": "/bucket_a/dir/"}),
    case("6336", OBS, **{"spec.storage.location.path": "bucket-a/dir/"}),
    case("6336", OBS, **{"spec.storage.location.path": "/bucket-a/../dir/"}),
    case("6332", OBS, **{"spec.storage.location.path": 5}),
    case("6324", OBS, **{"spec.storage.type": "s3"}),
    # obsfs (in the dedicated pool)
    case("6317", OBSFS, **{"spec.storage.location": DROP}),
    case("6317", OBSFS, **{"spec.storage.location.path": ""}),
    case("6336", OBSFS, **{"spec.storage.location.path": "my-pfs/sub"}),
    case("6336", OBSFS, **{"spec.storage.location.path": "/my-pfs/sub/"}),
    case("6336", OBSFS, **{"spec.storage.location.path": "/"}),
    case("6336", OBSFS, **{"spec.storage.location.mount_path": "/tmp"}),
    case("6336", OBSFS, **{"spec.storage.location.mount_path": "/home/ma-user/workx"}),
    case("6336", OBSFS, **{"spec.storage.location.mount_path": f"{WORK_DIR}/../x"}),
    case("6336", OBSFS, **{"spec.storage.location.mount_path": "work/sub"}),
    case("6336", OBSFS, **{"spec.storage.location.access_modes": "ReadOnly"}),
    case("6336", OBSFS, **{"spec.storage.location.access_modes": "readwritemany"}),
    case("6332", OBSFS, **{"spec.storage.location.access_modes": 1}),
    case("6332", OBSFS, **{"spec.storage.location.mount_path": ["/x"]}),
    # extend_storage
    case("6332", OBSFS, **{"spec.extend_storage": {}}),
    case("6332", OBSFS, **{"spec.extend_storage": "obsfs"}),
    case("6332", OBSFS, **{"spec.extend_storage": ["obsfs"]}),
    case("6332", OBSFS, **{"spec.extend_storage": [{**EXT, "type": 3}]}),
    case("6324", OBSFS, **{"spec.extend_storage": [{**EXT, "type": "obs"}]}),
    case("6324", OBSFS, **{"spec.extend_storage": [{**EXT, "type": "evs"}]}),
    case("6324", **{"spec.extend_storage": [EXT]}),  # no dedicated pool
    case("6324", OBS, **{"spec.extend_storage": [EXT]}),
    case("6335", OBSFS, **{"spec.extend_storage": [{"location": EXT["location"]}]}),
    case("6317", OBSFS, **{"spec.extend_storage": [{"type": "obsfs"}]}),
    case("6317", OBSFS, **{"spec.extend_storage": [{"type": "obsfs", "location": {}}]}),
    case("6336", OBSFS, **{"spec.extend_storage": [{"type": "obsfs",
                                                     "location": {"path": "a-pfs/x"}}]}),
    # the primary obsfs storage mounts at the work dir: an extension there collides
    case("6336", OBSFS, **{"spec.extend_storage": [{"type": "obsfs",
                                                     "location": {"path": "ref-pfs"}}]}),
    case("6336", OBSFS, **{"spec.extend_storage": [EXT, {**EXT, "location": {
        "path": "other-pfs", "mount_path": f"{WORK_DIR}/ref/"}}]}),
    case("6336", OBSFS, **{"spec.extend_storage": [{**EXT, "location": {
        "path": "ref-pfs", "mount_path": "/mnt"}}]}),
    # auto_stop
    case("6348", **{"spec.auto_stop": {"enable": True}}),
    case("6348", **{"spec.auto_stop": {"enable": True, "duration": None}}),
    case("6349", **{"spec.auto_stop": {"enable": True, "duration": 0}}),
    case("6349", **{"spec.auto_stop": {"enable": True, "duration": 86401}}),
    case("6349", **{"spec.auto_stop": {"enable": True, "duration": -3600}}),
    case("6332", **{"spec.auto_stop": {"enable": True, "duration": "3600"}}),
    case("6332", **{"spec.auto_stop": {"enable": True, "duration": 3600.0}}),
    case("6332", **{"spec.auto_stop": {"enable": True, "duration": True}}),
    case("6332", **{"spec.auto_stop": {"enable": "true", "duration": 3600}}),
    case("6332", **{"spec.auto_stop": {"enable": 1, "duration": 3600}}),
    case("6332", **{"spec.auto_stop": {"enable": False, "duration": "x"}}),
    case("6332", **{"spec.auto_stop": {"prompt": "no"}}),
    case("6332", **{"spec.auto_stop": {"prompt": 0}}),
    case("6332", **{"spec.auto_stop": "on"}),
    case("6332", **{"spec.auto_stop": [True]}),
    # annotations
    case("6332", **{"spec.annotations": {"team": 1}}),
    case("6332", **{"spec.annotations": {"team": None}}),
    case("6332", **{"spec.annotations": {"team": ["a"]}}),
    case("6332", **{"spec.annotations": ["team"]}),
    case("6332", **{"spec.annotations": "team=a"}),
]


@pytest.mark.parametrize(("body", "code"), REJECTED)
def test_rejected_and_nothing_stored(api: httpx.Client, body: dict[str, Any], code: str) -> None:
    assert_error(api.post("", json=body), f"ModelArts.{code}")
    assert stored_count(api) == 0


# Bodies with two faults: the earlier step of the §2.1 order decides.
ORDERED = [
    case("6335", name=DROP, description=5),                         # 2 before 3
    case("6335", spec=DROP, name="bad name"),                       # 2 before 4
    case("6332", description=5, name="bad name"),                   # 3 before 4
    case("6332", name="bad name", **{"spec.auto_stop.duration": "1"}),  # 3 (deep) before 4
    case("6332", workspace={"id": "nope"}, **{"spec.annotations": {"a": 1}}),  # 3 before 5
    case("6332", **{"spec.storage": DROP, "spec.annotations": {"a": 1}}),  # 3 before 7
    case("6334", name="bad name", workspace={"id": "nope"}),        # 4 before 5
    case("6336", description="x" * 513, workspace={"id": "nope"}),  # 4 before 5
    case("6334", name="bad name", description="x" * 513),           # name before description
    case("0102", workspace={"id": "nope"}, pool={"id": "nope"}),    # workspace before pool
    case("6355", pool={"id": "pool-warming"}, profile_id="nope"),   # 5 before 6
    case("6336", profile_id="nope", flavor="nope"),                 # profile before flavor
    case("6323", flavor="nope", **{"spec.storage": DROP}),          # 6 before 7
    case("6328", flavor="modelarts.vm.cpu.restricted", profile_id=GPU_PROFILE),  # 6328 < 6330
    case("6330", profile_id=GPU_PROFILE, **{"spec.storage": DROP}),  # 6 before 7
    case("6316", **{"spec.storage": DROP, "spec.extend_storage": [EXT]}),  # 7 before 8
    case("6318", OBS, **{"spec.storage.location.path": "/b-ucket/x",
                         "spec.extend_storage": [EXT]}),            # 7 before 8
    case("6324", **{"spec.extend_storage": [EXT],
                    "spec.auto_stop": {"enable": True}}),           # 8 before 9
    case("6348", flavor="modelarts.vm.cpu.soldout",
         **{"spec.auto_stop": {"enable": True}}),                   # 9 before 11
    case("6331", **{"spec.storage.location.volume_size": 1,
                    "spec.auto_stop": {"enable": True, "duration": 1_000_000}}),  # 7 before 9
]


@pytest.mark.parametrize(("body", "code"), ORDERED)
def test_validation_order(api: httpx.Client, body: dict[str, Any], code: str) -> None:
    assert_error(api.post("", json=body), f"ModelArts.{code}")
    assert stored_count(api) == 0


def test_name_taken_is_checked_after_the_body(api: httpx.Client) -> None:
    create(api, name="taken")
    assert_error(api.post("", json=build(name="taken", **{"spec.auto_stop": {"enable": True}})),
                 "ModelArts.6348")
    assert_error(api.post("", json=build(name="taken")), "ModelArts.6301")
    # uniqueness comes before the flavor quota and the capacity checks (step 10 before 11)
    assert_error(api.post("", json=build(name="taken", flavor="modelarts.vm.cpu.soldout")),
                 "ModelArts.6301")
    assert stored_count(api) == 1


def test_flavor_quota_0118(api: httpx.Client) -> None:
    create(api, name="first", flavor="modelarts.vm.cpu.quota1")
    assert_error(api.post("", json=build(name="second", flavor="modelarts.vm.cpu.quota1")),
                 "ModelArts.0118")
    # name uniqueness is checked before the flavor quota
    assert_error(api.post("", json=build(name="first", flavor="modelarts.vm.cpu.quota1")),
                 "ModelArts.6301")
    # other flavors are not affected
    create(api, name="third")
    assert stored_count(api) == 2


def test_names_are_unique_per_project_only(api: httpx.Client, server: Any) -> None:
    create(api, name="shared")
    with client_for(server, project=uuid.uuid4().hex) as other:
        before = stored_count(other, tombstones=True)
        created = ok(other.post("", json=build(name="shared")))
        remove(other, created["id"])
        assert stored_count(other, tombstones=True) == before + 1


def test_name_is_free_again_after_delete(api: httpx.Client) -> None:
    first = create(api, name="again")
    remove(api, first["id"])
    second = create(api, name="again")
    assert second["id"] != first["id"]


# --- bodies the server cannot read (6400) -----------------------------------------------

RAW_BODIES = [
    pytest.param(b"", id="empty"),
    pytest.param(b"{", id="truncated"),
    pytest.param(b"{'name': 'nb'}", id="single-quotes"),
    pytest.param(b"[]", id="array"),
    pytest.param(b'"nb"', id="string"),
    pytest.param(b"42", id="number"),
    pytest.param(b"null", id="null"),
    pytest.param(b"true", id="true"),
    pytest.param(b'{"name": "nb", "x": NaN}', id="nan"),
    pytest.param(b'{"name": "nb", "x": Infinity}', id="infinity"),
    pytest.param(b'{"name": "\xff\xfe"}', id="not-utf8"),
    pytest.param('{"name": "nb"}'.encode("utf-16"), id="utf16"),
    pytest.param(b'{"description": "\\ud800"}', id="lone-surrogate"),
    pytest.param(b"[" * 100_000 + b"]" * 100_000, id="deeply-nested"),
    pytest.param(b'{"a": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", id="deeply-nested-value"),
]
# A body that is too large keeps the code 6400 but answers HTTP 413: see test_hardening.py.


@pytest.mark.parametrize("raw", RAW_BODIES)
def test_unreadable_body_6400(api: httpx.Client, raw: bytes) -> None:
    response = api.post("", content=raw, headers={"Content-Type": "application/json"})
    assert_error(response, "ModelArts.6400")
    assert stored_count(api) == 0


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_body_is_json_whatever_the_content_type(
    api: httpx.Client, content_type: str | None
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = api.post("", content=json.dumps(build()).encode(), headers=headers)
    assert ok(response)["status"] == "CREATING"


def test_utf8_chinese_description_and_bom_free(api: httpx.Client) -> None:
    created = create(api, description="探索数据")
    assert created["description"] == "探索数据"


# --- accepted bodies: defaults, null = absent, what is echoed --------------------------


def test_minimal_body_defaults(api: httpx.Client) -> None:
    body = create(api)
    assert body["description"] == ""
    assert body["workspace"] == {"id": "0"}
    assert body["ai_project"] == {"id": "default-ai-project"}
    assert "pool" not in body
    spec = body["spec"]
    assert spec["storage"] == {
        "type": "evs",
        "location": {"path": WORK_DIR, "volume_size": 5, "volume_unit": "GB"},
    }
    assert spec["auto_stop"] == {"enable": False, "prompt": True}
    assert spec["extend_storage"] is None
    assert spec["annotations"]["url"] == ""
    assert set(spec["annotations"]) == {"target_domain", "url"}


def test_null_means_absent(api: httpx.Client) -> None:
    body = create(api, description=None, workspace=None, pool=None, ai_project=None,
                  **{"spec.auto_stop": None, "spec.annotations": None,
                     "spec.extend_storage": None, "spec.storage.location": None})
    assert body["description"] == ""
    assert body["workspace"] == {"id": "0"}
    assert body["ai_project"] == {"id": "default-ai-project"}
    assert "pool" not in body
    assert body["spec"]["auto_stop"] == {"enable": False, "prompt": True}
    assert body["spec"]["extend_storage"] is None
    assert body["spec"]["storage"]["location"]["volume_size"] == 5
    nested = create(api, name="nested", workspace={"id": None}, pool={"id": None},
                    **{"spec.auto_stop": {"enable": None, "duration": None, "prompt": None},
                       "spec.storage.location.volume_size": None})
    assert nested["spec"]["auto_stop"] == {"enable": False, "prompt": True}
    assert nested["workspace"] == {"id": "0"}


@pytest.mark.parametrize("pool", [{}, {"id": ""}, {"id": "", "name": "", "type": ""}, None])
def test_empty_pool_means_no_pool(api: httpx.Client, pool: Any) -> None:
    body = create(api, pool=pool)
    assert "pool" not in body


ACCEPTED = [
    pytest.param({"name": "a" * 64}, id="name-64"),
    pytest.param({"name": "A-z_09"}, id="name-charset"),
    pytest.param({"name": "-"}, id="name-1"),
    pytest.param({"description": "x" * 512}, id="description-512"),
    pytest.param({"description": "é" * 512}, id="description-512-codepoints"),
    pytest.param({"description": "can use ; : ? ! # % and \\ too"}, id="description-punct"),
    pytest.param({"spec.storage.location.volume_size": 5}, id="volume-5"),
    pytest.param({"spec.storage.location.volume_size": 4096}, id="volume-4096"),
    pytest.param({"spec.storage.location.path": "/ignored"}, id="evs-path-ignored"),
    pytest.param({"workspace": {"id": "ws-analytics"}}, id="workspace"),
    pytest.param({"ai_project": {"id": "x" * 128}}, id="ai-project-128"),
    pytest.param({"spec.auto_stop": {"enable": True, "duration": 86400}}, id="duration-max"),
    pytest.param({"spec.auto_stop": {"enable": False, "duration": 0}}, id="disabled-duration-0"),
    pytest.param({"spec.auto_stop": {"enable": False, "duration": 10**9}},
                 id="disabled-duration-huge"),
    pytest.param({"profile_id": "Ascend-Power-Engine 1.0(python3)",
                  "flavor": "modelarts.kat1.xlarge"}, id="ascend-casing"),
    pytest.param({"pool": {"id": DEDICATED_POOL, "type": "ignored", "name": "ignored"}},
                 id="pool-evs"),
    pytest.param({"id": "DE-mine", "status": "RUNNING", "spec.log_path": "/x",
                  "unknown": {"deep": [1]}}, id="response-only-and-unknown-ignored"),
]


@pytest.mark.parametrize("changes", ACCEPTED)
def test_accepted(api: httpx.Client, changes: dict[str, Any]) -> None:
    body = create(api, **changes)
    assert body["status"] == "CREATING"
    assert body["id"] != "DE-mine"
    assert "unknown" not in body and "log_path" not in body["spec"]
    assert stored_count(api, WORKSPACES, tombstones=True) == 1


def test_disabled_auto_stop_keeps_only_a_sensible_duration(api: httpx.Client) -> None:
    dropped = create(api, name="a", **{"spec.auto_stop": {"enable": False, "duration": 0}})
    assert dropped["spec"]["auto_stop"] == {"enable": False, "prompt": True}
    kept = create(api, name="b", **{"spec.auto_stop": {"enable": False, "duration": 7200,
                                                        "prompt": False}})
    assert kept["spec"]["auto_stop"] == {"enable": False, "duration": 7200, "prompt": False}


def test_echo_of_a_full_body(api: httpx.Client) -> None:
    body = create(api, name="full", description="Exploring the churn data set",
                  **{"spec.auto_stop": {"enable": True, "duration": 7200},
                     "spec.annotations": {"team": "analytics", "url": "mine",
                                          "target_domain": "mine"},
                     "spec.storage.location.volume_size": 10})
    assert body["name"] == "full"
    assert body["description"] == "Exploring the churn data set"
    assert body["profile"]["id"] == CPU_PROFILE
    assert body["flavor"] == CPU_FLAVOR
    assert body["spec"]["auto_stop"] == {"enable": True, "duration": 7200, "prompt": True}
    annotations = body["spec"]["annotations"]
    assert annotations["team"] == "analytics"
    assert annotations["url"] == ""  # the server's keys overwrite the caller's
    assert annotations["target_domain"] != "mine"
    assert body["spec"]["storage"]["location"] == {
        "path": WORK_DIR, "volume_size": 10, "volume_unit": "GB"}


@pytest.mark.parametrize("path", ["/bucket-a/notebooks/", "obs://bucket-a/notebooks/",
                                  "/a.b-c/x/y/", "/bucket-a/dir/"])
def test_obs_paths_stored_as_sent(api: httpx.Client, path: str) -> None:
    body = create(api, OBS, **{"spec.storage.location": {"path": path, "volume_size": "abc",
                                                         "mount_path": 5}})
    # volume_size / mount_path mean nothing for obs: ignored, not echoed (§8 item 33)
    assert body["spec"]["storage"] == {"type": "obs", "location": {"path": path}}


@pytest.mark.parametrize("path", ["my-pfs", "/my-pfs/", "my-pfs/"])
def test_obsfs_in_the_dedicated_pool(api: httpx.Client, path: str) -> None:
    body = create(api, OBSFS, **{"spec.storage.location.path": path,
                                 "spec.extend_storage": [EXT]})
    assert body["pool"]["id"] == DEDICATED_POOL
    assert body["pool"]["type"] == "USER_DEFINED"
    assert body["pool"]["owner"] == {"project_id": api.base_url.path.split("/")[2]}
    primary = body["spec"]["storage"]
    assert primary == {"type": "obsfs", "location": {
        "path": path, "mount_path": WORK_DIR, "access_modes": "ReadWriteMany"}}
    assert body["spec"]["extend_storage"] == [{"type": "obsfs", "location": {
        "path": "ref-pfs", "mount_path": f"{WORK_DIR}/ref", "access_modes": "ReadWriteMany"}}]


def test_obsfs_options(api: httpx.Client) -> None:
    body = create(api, OBSFS, **{"spec.storage.location": {
        "path": "my-pfs", "mount_path": f"{WORK_DIR}/data/", "access_modes": "ReadOnlyMany"}})
    location = body["spec"]["storage"]["location"]
    assert location["mount_path"] == f"{WORK_DIR}/data"
    assert location["access_modes"] == "ReadOnlyMany"


def test_empty_extend_storage_list(api: httpx.Client) -> None:
    body = create(api, **{"spec.extend_storage": []})
    assert body["spec"]["extend_storage"] in (None, [])


# --- settings-dependent rules, on the built-in defaults ------------------------------


@pytest.fixture
def default_api(default_server: ServerProcess) -> Iterator[httpx.Client]:
    with client_for(default_server, project=uuid.uuid4().hex) as client:
        yield client


def test_instance_quota_6302(default_api: httpx.Client) -> None:
    ids = [create(default_api, name=f"nb{i}")["id"] for i in range(10)]
    assert_error(default_api.post("", json=build(name="eleventh")), "ModelArts.6302")
    # uniqueness is checked before the quota
    assert_error(default_api.post("", json=build(name="nb0")), "ModelArts.6301")
    assert stored_count(default_api, ("0",), tombstones=True) == 10
    # a deleted instance frees its place
    remove(default_api, ids[0])
    create(default_api, name="eleventh")
    assert_error(default_api.post("", json=build(name="twelfth")), "ModelArts.6302")


@pytest.mark.parametrize("duration", [3599, 86401, 1])
def test_default_auto_stop_range_6349(default_api: httpx.Client, duration: int) -> None:
    body = build(**{"spec.auto_stop": {"enable": True, "duration": duration}})
    error = assert_error(default_api.post("", json=body), "ModelArts.6349")
    assert "3600" in error["error_message"] and "86400" in error["error_message"]


def test_default_auto_stop_bounds_accepted(default_api: httpx.Client) -> None:
    create(default_api, name="low", **{"spec.auto_stop": {"enable": True, "duration": 3600}})
    create(default_api, name="high", **{"spec.auto_stop": {"enable": True, "duration": 86400}})


@pytest.mark.parametrize("storage", [OBS_STORAGE, OBSFS_STORAGE])
def test_no_object_storage_6324(default_api: httpx.Client, storage: dict[str, Any]) -> None:
    assert_error(default_api.post("", json=build(**{"spec.storage": storage})), "ModelArts.6324")
    assert stored_count(default_api, ("0",)) == 0


def test_volume_size_message_carries_the_range(api: httpx.Client) -> None:
    error = assert_error(api.post("", json=build(**{"spec.storage.location.volume_size": 1})),
                         "ModelArts.6331")
    assert "5" in error["error_message"] and "4096" in error["error_message"]


def test_forbidden_character_is_named(api: httpx.Client) -> None:
    error = assert_error(api.post("", json=build(name="ab$c d")), "ModelArts.6334")
    assert "$" in error["error_message"]


def test_s3_endpoint_without_a_key_6319(server_factory: Callable[..., ServerProcess]) -> None:
    # An endpoint is configured, the access key is not: the contract's "no AK/SK".
    server = server_factory(env={"DEMANAGER_S3__ENDPOINT_URL": "http://127.0.0.1:9"})
    with client_for(server, project=uuid.uuid4().hex) as client:
        body = build(**{"spec.storage": OBS_STORAGE})
        assert_error(client.post("", json=body), "ModelArts.6319")
        assert stored_count(client, ("0",)) == 0


def test_the_s3_secret_never_reaches_the_log(
    server_factory: Callable[..., ServerProcess],
) -> None:
    secret = f"sk-{uuid.uuid4().hex}"
    server = server_factory(
        env={
            "DEMANAGER_S3__ENDPOINT_URL": "http://127.0.0.1:9",
            "DEMANAGER_S3__ACCESS_KEY_ID": "ak",
            "DEMANAGER_S3__SECRET_ACCESS_KEY": secret,
            "DEMANAGER_LOG_LEVEL": "debug",
        }
    )
    with client_for(server, project=uuid.uuid4().hex) as client:
        # The deployment's keys serve only buckets granted to the project: 6320, no call.
        body = build(**{"spec.storage": OBS_STORAGE})
        assert_error(client.post("", json=body), "ModelArts.6320")
        assert stored_count(client, ("0",)) == 0
    assert secret not in server.log_path.read_text(encoding="utf-8")
