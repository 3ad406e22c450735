"""Object storage, the same cases on every backend that syncs buckets: a real S3 server
(moto on loopback), a real server process, and the notebook's kernel doing the reads and
writes, so what is checked is what a user's code sees."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from tests.backends.conformance.harness import CATALOG, FLAVOR, PROFILE, Harness
from tests.conftest import s3_env
from tests.e2e.jupyter import Notebook
from tests.s3server import MotoServer
from tests.server import ServerProcess, wait_for_status, wait_until

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

pytestmark = pytest.mark.slow

START_TIMEOUT = 180.0
WORK = "/home/ma-user/work"
POOL = "pool-conformance"

_WRITE = """
import os
try:
    os.makedirs(os.path.dirname({path!r}) or ".", exist_ok=True)
    with open({path!r}, "w") as f:
        f.write({text!r})
    result = "written"
except OSError as exc:
    result = type(exc).__name__
result
"""

_READ = """
with open({path!r}) as f:
    result = f.read()
result
"""

_DELETE = """
import os
os.remove({path!r})
"deleted"
"""


@pytest.fixture
def server(harness: Harness, moto: MotoServer) -> Iterator[ServerProcess]:
    if harness.no_synced_buckets:
        pytest.skip(harness.no_synced_buckets)
    started = ServerProcess(
        harness.workdir / "storage-server",
        backend=harness.backend,
        env={
            **harness.env(),
            **s3_env(moto, DEMANAGER_S3__SYNC_SECONDS="3600"),
            "DEMANAGER_CATALOG_FILE": str(CATALOG),
        },
    )
    try:
        yield started.start()
    finally:
        started.close()


def _grant(server: ServerProcess, bucket: str) -> None:
    done = server.cli("storage", "grant", bucket, server.project)
    assert done.returncode == 0, done.stderr


def _run(notebook: Notebook, code: str) -> Any:
    return ast.literal_eval(notebook.execute(code))


def _keys(s3: S3Client, bucket: str) -> set[str]:
    return {o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}


def _body_of(s3: S3Client, bucket: str, key: str) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def _create(server: ServerProcess, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    with server.client() as api:
        created = api.post("", json=body)
        assert created.status_code == 200, created.text
        instance_id = created.json()["id"]
        return instance_id, wait_for_status(api, instance_id, "RUNNING", START_TIMEOUT)


def _act(server: ServerProcess, instance_id: str, action: str, until: str) -> dict[str, Any]:
    with server.client() as api:
        response = api.post(f"/{instance_id}/action", json={"action": action})
        assert response.status_code == 200, response.text
        return wait_for_status(api, instance_id, until, START_TIMEOUT)


def _delete(server: ServerProcess, harness: Harness, instance_id: str) -> None:
    with server.client() as api:
        deleted = api.delete(f"/{instance_id}")
        assert deleted.status_code == 200, deleted.text
    wait_until(lambda: harness.leftovers(instance_id) == [],
               f"nothing of {instance_id} is left", 60)


def test_obs_round_trip(harness: Harness, server: ServerProcess, moto: MotoServer) -> None:
    s3 = moto.client()
    bucket = moto.new_bucket("work")
    s3.put_object(Bucket=bucket, Key="data/in.txt", Body=b"from the bucket")
    s3.put_object(Bucket=bucket, Key="data/sub/gone.txt", Body=b"deleted by the user")
    _grant(server, bucket)
    body = {"name": "obs", "profile_id": PROFILE, "flavor": FLAVOR,
            "spec": {"storage": {"type": "obs", "location": {"path": f"/{bucket}/data/"}}}}
    instance_id, view = _create(server, body)
    with Notebook(view["spec"]["annotations"]["url"], server.token) as nb:
        assert _run(nb, _READ.format(path="in.txt")) == "from the bucket"
        assert _run(nb, _WRITE.format(path="out/new.txt", text="from the kernel")) == "written"
        assert _run(nb, _DELETE.format(path="sub/gone.txt")) == "deleted"
    # Another writer adds a file the instance never saw: the sync must leave it.
    s3.put_object(Bucket=bucket, Key="data/other.txt", Body=b"someone else's")
    _act(server, instance_id, "stop", "STOPPED")
    assert _body_of(s3, bucket, "data/out/new.txt") == b"from the kernel"
    assert _keys(s3, bucket) == {"data/in.txt", "data/out/new.txt", "data/other.txt"}
    # The next start brings the bucket's news down.
    restarted = _act(server, instance_id, "start", "RUNNING")
    with Notebook(restarted["spec"]["annotations"]["url"], server.token) as nb:
        assert _run(nb, _READ.format(path="other.txt")) == "someone else's"
    _act(server, instance_id, "stop", "STOPPED")
    _delete(server, harness, instance_id)
    assert _body_of(s3, bucket, "data/in.txt") == b"from the bucket", "delete keeps the bucket"


def test_read_only_and_read_write_mounts(
    harness: Harness, server: ServerProcess, moto: MotoServer
) -> None:
    s3 = moto.client()
    shared, results = moto.new_bucket("ro"), moto.new_bucket("rw")
    s3.put_object(Bucket=shared, Key="ref.csv", Body=b"a,b")
    for bucket in (shared, results):
        _grant(server, bucket)
    body = {
        "name": "mounts", "profile_id": PROFILE, "flavor": FLAVOR, "pool": {"id": POOL},
        "spec": {
            "storage": {"type": "evs", "location": {"volume_size": 5}},
            "extend_storage": [
                {"type": "obsfs", "location": {"path": shared, "mount_path": f"{WORK}/ref",
                                               "access_modes": "ReadOnlyMany"}},
                {"type": "obsfs", "location": {"path": results, "mount_path": f"{WORK}/out",
                                               "access_modes": "ReadWriteMany"}},
            ],
        },
    }
    instance_id, view = _create(server, body)
    with Notebook(view["spec"]["annotations"]["url"], server.token) as nb:
        assert _run(nb, _READ.format(path="ref/ref.csv")) == "a,b"
        refused = _run(nb, _WRITE.format(path="ref/new.csv", text="no"))
        assert refused in ("PermissionError", "OSError"), refused
        overwrite = _run(nb, _WRITE.format(path="ref/ref.csv", text="no"))
        assert overwrite in ("PermissionError", "OSError"), overwrite
        assert _run(nb, _WRITE.format(path="out/result.txt", text="42")) == "written"
    _act(server, instance_id, "stop", "STOPPED")
    assert _body_of(s3, results, "result.txt") == b"42"
    assert _keys(s3, shared) == {"ref.csv"}
    assert _body_of(s3, shared, "ref.csv") == b"a,b"
    _delete(server, harness, instance_id)
