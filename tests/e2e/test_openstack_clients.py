"""Stock OpenStack clients sign in with a password and drive the API unchanged:
keystoneauth1 (``v3.Password`` + ``Session``) and openstacksdk with otcextensions'
``modelartsv1`` Devenv proxy, against a real server with the fake backend.

Every client is pointed at the loopback server explicitly (auth_url, no cloud
name, no clouds.yaml), so nothing here can reach a real cloud.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.test_keystone import PASSWORD, add_user
from tests.server import ServerProcess, running_server, wait_for_status

ks_session = pytest.importorskip("keystoneauth1.session")
ks_v3 = pytest.importorskip("keystoneauth1.identity.v3")
openstack = pytest.importorskip("openstack")
otc = pytest.importorskip("otcextensions.sdk")

# openstacksdk's own deprecations, triggered by how otcextensions calls it (InfluxDB
# settings, a service_type argument): theirs to fix, not ours.
pytestmark = pytest.mark.filterwarnings("ignore::openstack.warnings._RemovedInSDKWarning")


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory, monkeypatch_module: pytest.MonkeyPatch
          ) -> Iterator[tuple[ServerProcess, str]]:
    # No clouds.yaml, secure.yaml or OS_* variable of the machine may steer the clients.
    empty = tmp_path_factory.mktemp("no-clouds")
    for name in ("OS_CLIENT_CONFIG_FILE", "OS_CLIENT_SECURE_FILE"):
        monkeypatch_module.setenv(name, str(empty / "none.yaml"))
    monkeypatch_module.setenv("XDG_CONFIG_HOME", str(empty))
    monkeypatch_module.setenv("HOME", str(empty))
    for name in list(os.environ):
        if name.startswith("OS_") and name not in ("OS_CLIENT_CONFIG_FILE",
                                                   "OS_CLIENT_SECURE_FILE"):
            monkeypatch_module.delenv(name)
    with running_server(Path(tmp_path_factory.mktemp("os-server")), backend="fake") as server:
        project = uuid.uuid4().hex
        add_user(server, "alice", project)
        yield server, project


def poll(done: Callable[[], bool], timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    delay = 0.05
    while time.monotonic() < deadline:
        if done():
            return True
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)
    return False


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_keystoneauth_session_finds_the_endpoint_and_its_token_works(
    cloud: tuple[ServerProcess, str],
) -> None:
    server, project = cloud
    auth = ks_v3.Password(
        auth_url=f"{server.url}/v3", username="alice", password=PASSWORD,
        user_domain_name="Default", project_name=project, project_domain_name="Default",
    )
    session = ks_session.Session(auth=auth)
    assert session.get_endpoint(service_type="modelartsv1") == f"{server.url}/v1/{project}"
    assert session.get_endpoint(service_type="modelarts", interface="public") == (
        f"{server.url}/v1/{project}")
    token = session.get_token()
    assert session.get_project_id() == project
    listed = httpx.get(f"{server.url}/v1/{project}/demanager/instances",
                       params={"de_type": "Notebook"}, headers={"X-Auth-Token": token},
                       timeout=30)
    assert listed.status_code == 200, listed.text
    assert listed.json()["instances"] == []


def test_openstacksdk_with_otcextensions_drives_devenv(
    cloud: tuple[ServerProcess, str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    server, project = cloud
    # A client-side bug, nothing the server can answer differently: otcextensions
    # 0.34.8's Devenv._translate_response reads ``self.has_body``, a class attribute
    # openstacksdk 4.x no longer defines, so every GET and action response raises
    # AttributeError before the body is read. Restore the attribute's old default.
    from otcextensions.sdk.modelartsv1.v1.devenv import Devenv

    if not hasattr(Devenv, "has_body"):
        monkeypatch.setattr(Devenv, "has_body", True, raising=False)
    conn = openstack.connect(
        auth_type="password",
        auth={
            "auth_url": f"{server.url}/v3", "username": "alice", "password": PASSWORD,
            "project_name": project, "user_domain_name": "Default",
            "project_domain_name": "Default",
        },
        load_yaml_config=False, load_envvars=False,
    )
    try:
        otc.register_otc_extensions(conn)
        devenv = conn.modelartsv1
        assert list(devenv.devenv_instances()) == []
        made = devenv.create_devenv_instance(
            name="from-sdk", profile_id="Multi-Engine 1.0 (python3)-cpu",
            flavor="modelarts.vm.cpu.2u", spec={"storage": {"type": "evs"}},
        )
        assert made.id.startswith("DE-")
        with server.client(project=project) as api:
            wait_for_status(api, made.id, "RUNNING")
        assert [i.id for i in devenv.devenv_instances()] == [made.id]
        got = devenv.get_devenv_instance(made.id)
        assert got.name == "from-sdk" and got.status == "RUNNING"
        assert got.user["name"] == "alice"
        updated = devenv.update_devenv_instance(got, description="changed by the SDK")
        assert updated.description == "changed by the SDK"
        devenv.stop_devenv_instance(made.id)
        with server.client(project=project) as api:
            wait_for_status(api, made.id, "STOPPED")
        devenv.start_devenv_instance(made.id)
        with server.client(project=project) as api:
            wait_for_status(api, made.id, "RUNNING")
            devenv.stop_devenv_instance(made.id)
            wait_for_status(api, made.id, "STOPPED")
        devenv.delete_devenv_instance(made.id)
        with server.client(project=project) as api:
            gone = poll(lambda: api.get(f"/{made.id}").status_code == 400)
        assert gone, "the instance was never deleted"
        assert list(devenv.devenv_instances()) == []
    finally:
        conn.close()
