"""Creates with object storage against a real S3 server (moto on loopback): every refusal
answers the contract's code and leaves no instance; the keys appear in no answer and no
log line. The fake backend runs the workloads: only the API's checks are under test."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.api.helpers import assert_error, build, stored_count
from tests.conftest import client_for, s3_env
from tests.s3server import LOOPBACK_ONLY, MotoServer
from tests.server import DEMANAGER, ServerProcess

POOL = "pool-dedicated"


@pytest.fixture(scope="module")
def s3_server(
    moto: MotoServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    proc = ServerProcess(
        tmp_path_factory.mktemp("s3-server"),
        backend="fake",
        env=s3_env(
            moto,
            DEMANAGER_CATALOG_FILE=str(Path(__file__).parents[1] / "data" / "catalog.yaml"),
            DEMANAGER_LOG_LEVEL="debug",
        ),
    ).start()
    yield proc
    proc.close()


def _obs(path: str) -> dict[str, object]:
    return build(**{"spec.storage": {"type": "obs", "location": {"path": path}}})


def _grant(server: ServerProcess, bucket: str, project: str) -> None:
    done = server.cli("storage", "grant", bucket, project)
    assert done.returncode == 0, done.stderr


def test_a_granted_bucket_is_accepted(s3_server: ServerProcess, moto: MotoServer) -> None:
    project, bucket = uuid.uuid4().hex, moto.new_bucket()
    _grant(s3_server, bucket, project)
    with client_for(s3_server, project=project) as api:
        created = api.post("", json=_obs(f"/{bucket}/work/"))
        assert created.status_code == 200, created.text
        assert created.json()["spec"]["storage"]["location"]["path"] == f"/{bucket}/work/"


@pytest.mark.parametrize("whose", ["nobody", "another project"])
def test_a_bucket_not_granted_to_the_project_is_6320(
    s3_server: ServerProcess, moto: MotoServer, whose: str
) -> None:
    project, bucket = uuid.uuid4().hex, moto.new_bucket()
    if whose == "another project":
        _grant(s3_server, bucket, uuid.uuid4().hex)
    with client_for(s3_server, project=project) as api:
        error = assert_error(api.post("", json=_obs(f"/{bucket}/work/")), "ModelArts.6320")
        assert bucket in error["error_message"]
        assert stored_count(api) == 0


def test_a_missing_bucket_is_6320(s3_server: ServerProcess) -> None:
    project, bucket = uuid.uuid4().hex, f"nowhere-{uuid.uuid4().hex[:8]}"
    _grant(s3_server, bucket, project)
    with client_for(s3_server, project=project) as api:
        error = assert_error(api.post("", json=_obs(f"/{bucket}/work/")), "ModelArts.6320")
        assert "does not exist" in error["error_message"]
        assert stored_count(api) == 0


def test_an_obsfs_mount_of_someone_elses_bucket_is_6320(
    s3_server: ServerProcess, moto: MotoServer
) -> None:
    project, bucket = uuid.uuid4().hex, moto.new_bucket()
    _grant(s3_server, bucket, uuid.uuid4().hex)
    body = build(**{
        "pool": {"id": POOL},
        "spec.extend_storage": [{"type": "obsfs", "location": {
            "path": bucket, "mount_path": "/home/ma-user/work/data"}}],
    })
    with client_for(s3_server, project=project) as api:
        assert_error(api.post("", json=body), "ModelArts.6320")
        assert stored_count(api) == 0


@pytest.mark.parametrize(
    ("path", "code"),
    [("/{b}/", "ModelArts.6358"), ("/{b}/../other/", "ModelArts.6336"),
     ("/{b}/a/../../x/", "ModelArts.6336"), ("/{b}//x/", "ModelArts.6336"),
     ("/{b}/work", "ModelArts.6318")],
)
def test_the_path_rules(s3_server: ServerProcess, moto: MotoServer, path: str,
                        code: str) -> None:
    project, bucket = uuid.uuid4().hex, moto.new_bucket()
    _grant(s3_server, bucket, project)
    with client_for(s3_server, project=project) as api:
        assert_error(api.post("", json=_obs(path.format(b=bucket))), code)
        assert stored_count(api) == 0


def test_a_project_with_its_own_keys_needs_no_grant(
    s3_server: ServerProcess, moto: MotoServer
) -> None:
    project, bucket = uuid.uuid4().hex, moto.new_bucket()
    _set_keys(s3_server, project, moto.access_key, moto.secret_key)
    with client_for(s3_server, project=project) as api:
        created = api.post("", json=_obs(f"/{bucket}/work/"))
        assert created.status_code == 200, created.text


def test_wrong_keys_are_6320_and_never_shown(
    s3_server: ServerProcess, moto: MotoServer
) -> None:
    project, bucket = uuid.uuid4().hex, moto.new_bucket()
    wrong = f"wrong-{uuid.uuid4().hex}"
    _set_keys(s3_server, project, moto.access_key, wrong)
    with client_for(s3_server, project=project) as api:
        response = api.post("", json=_obs(f"/{bucket}/work/"))
        error = assert_error(response, "ModelArts.6320")
        assert "refused" in error["error_message"]
        assert stored_count(api) == 0
    log = s3_server.log_path.read_text(encoding="utf-8")
    for secret in (wrong, moto.secret_key):
        assert secret not in response.text and secret not in log


def test_no_keys_at_all_is_6319(
    server_factory: Callable[..., ServerProcess], moto: MotoServer
) -> None:
    # The deployment names the store but holds no keys, and the project has none.
    env = {**LOOPBACK_ONLY, "DEMANAGER_S3__ENDPOINT_URL": moto.endpoint}
    server = server_factory(env=env)
    with client_for(server, project=uuid.uuid4().hex) as api:
        assert_error(api.post("", json=_obs(f"/{moto.new_bucket()}/work/")), "ModelArts.6319")
        assert stored_count(api) == 0


def _set_keys(server: ServerProcess, project: str, access_key: str, secret: str) -> None:
    done = subprocess.run(
        [DEMANAGER, "storage", "keys", "set", project, "--access-key-id", access_key,
         "--secret-access-key-stdin"],
        input=secret + "\n", env=server.env, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert secret not in done.stdout + done.stderr
