"""Object storage through faults, with real notebooks on the process backend and a real
S3 server (moto on loopback): the server crashing while a notebook writes, and the
store going away and coming back while it runs. Nothing written may be lost."""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import s3_env
from tests.e2e.jupyter import Notebook
from tests.s3server import MotoServer, Relay
from tests.server import ServerProcess, wait_for_status, wait_until

pytestmark = pytest.mark.slow

_WRITE = """
with open({path!r}, "w") as f:
    f.write({text!r})
"written"
"""


@pytest.fixture
def relay(moto: MotoServer) -> Iterator[Relay]:
    relay = Relay(moto.port).restore()
    yield relay
    relay.cut()


def _obs_body(name: str, bucket: str) -> dict[str, Any]:
    return {
        "name": name,
        "profile_id": "Multi-Engine 1.0 (python3)-cpu",
        "flavor": "modelarts.vm.cpu.2u",
        "spec": {"storage": {"type": "obs", "location": {"path": f"/{bucket}/work/"}}},
    }


def _start(server: ServerProcess, bucket: str) -> tuple[str, Notebook]:
    granted = server.cli("storage", "grant", bucket, server.project)
    assert granted.returncode == 0, granted.stderr
    with server.client() as api:
        created = api.post("", json=_obs_body("obs", bucket))
        assert created.status_code == 200, created.text
        instance_id = created.json()["id"]
        view = wait_for_status(api, instance_id, "RUNNING")
    return instance_id, Notebook(view["spec"]["annotations"]["url"], server.token)


def _object(moto: MotoServer, bucket: str, key: str) -> bytes | None:
    s3 = moto.client()
    try:
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except s3.exceptions.NoSuchKey:
        return None


def test_a_write_survives_a_crash_of_the_server(
    server_factory: Callable[..., ServerProcess], moto: MotoServer
) -> None:
    # No periodic sync within the test: only the stop can bring the file up.
    server = server_factory(backend="process", env=s3_env(moto, DEMANAGER_S3__SYNC_SECONDS="3600"))
    bucket = moto.new_bucket("crash")
    instance_id, notebook = _start(server, bucket)
    with notebook:
        assert ast.literal_eval(notebook.execute(_WRITE.format(path="kept.txt",
                                                               text="before the crash")))
    server.kill()
    assert _object(moto, bucket, "work/kept.txt") is None
    server.start()
    with server.client() as api:
        wait_for_status(api, instance_id, "RUNNING")
        api.post(f"/{instance_id}/action", json={"action": "stop"})
        wait_for_status(api, instance_id, "STOPPED")
    assert _object(moto, bucket, "work/kept.txt") == b"before the crash"


def test_the_store_goes_away_and_comes_back_while_a_notebook_runs(
    server_factory: Callable[..., ServerProcess], moto: MotoServer, relay: Relay
) -> None:
    server = server_factory(
        backend="process", env=s3_env(moto, relay.endpoint, DEMANAGER_S3__SYNC_SECONDS="1")
    )
    bucket = moto.new_bucket("outage")
    instance_id, notebook = _start(server, bucket)
    relay.cut()
    with notebook, server.client() as api:
        notebook.execute(_WRITE.format(path="during.txt", text="while the store was away"))

        def reported(words: str) -> bool:
            reason = api.get(f"/{instance_id}").json()["spec"].get("failed_reasons") or {}
            return words in reason.get("message", "")

        wait_until(lambda: reported("sync failing since"), "the outage is reported", 60)
        assert api.get(f"/{instance_id}").json()["status"] == "RUNNING", "the notebook runs on"
        assert notebook.status() == 200
        relay.restore()
        wait_until(lambda: _object(moto, bucket, "work/during.txt") is not None,
                   "the write reaches the bucket once the store is back", 90)
        wait_until(lambda: reported("was unreachable from"), "the recovery is reported", 60)
        notebook.execute(_WRITE.format(path="after.txt", text="after it came back"))
        api.post(f"/{instance_id}/action", json={"action": "stop"})
        wait_for_status(api, instance_id, "STOPPED")
    assert _object(moto, bucket, "work/during.txt") == b"while the store was away"
    assert _object(moto, bucket, "work/after.txt") == b"after it came back"
