"""Shared fixtures: real server processes (see ``tests/server.py``)."""

from __future__ import annotations

import shutil
import ssl
import uuid
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.s3server import LOOPBACK_ONLY, MotoServer
from tests.server import ServerProcess, traversable_dir

MINIMAL_BODY: dict[str, Any] = {
    "name": "nb",
    "profile_id": "Multi-Engine 1.0 (python3)-cpu",
    "flavor": "modelarts.vm.cpu.2u",
    "spec": {"storage": {"type": "evs"}},
}


STARTED = pytest.StashKey[list[ServerProcess]]()
"""The servers a test started through ``server_factory``: their logs join its failure."""


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test's report carries the tail of each of its servers' logs: what the
    server saw (a refused upstream, a traceback) is often the whole explanation."""
    report = yield
    if report.failed:
        for proc in item.stash.get(STARTED, []):
            report.sections.append((f"server log {proc.log_path}", proc.log()))
    return report


_TLS = ssl.create_default_context()
"""One TLS context for every test client: httpx builds a new one per client otherwise,
which costs about 0.1 s each (the servers are plain HTTP; this changes no behaviour)."""


def client_for(
    proc: ServerProcess, *, project: str | None = None, token: str | None = None
) -> httpx.Client:
    """What ``proc.client(token, project)`` returns, built without a fresh TLS context."""
    headers = {} if token == "" else {"X-Auth-Token": token or proc.token}
    return httpx.Client(
        base_url=f"{proc.url}/v1/{project or proc.project}/demanager/instances",
        headers=headers,
        timeout=30.0,
        verify=_TLS,
    )


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for many tests: fake backend, a high quota; isolate tests by project."""
    proc = ServerProcess(
        tmp_path_factory.mktemp("server"),
        backend="fake",
        env={
            "DEMANAGER_INSTANCE_QUOTA": "1000",
            "DEMANAGER_MIN_AUTO_STOP_SECONDS": "1",
            "DEMANAGER_OBJECT_STORAGE_ROOT": str(tmp_path_factory.mktemp("obs")),
            "DEMANAGER_CATALOG_FILE": str(Path(__file__).parent / "data" / "catalog.yaml"),
        },
    ).start()
    yield proc
    proc.close()


@pytest.fixture
def project() -> str:
    """A fresh project: the operator token is valid for every project."""
    return uuid.uuid4().hex


@pytest.fixture
def api(server: ServerProcess, project: str) -> Iterator[httpx.Client]:
    with client_for(server, project=project) as client:
        yield client


@pytest.fixture
def server_factory(request: pytest.FixtureRequest) -> Iterator[Callable[..., ServerProcess]]:
    """Start servers with custom settings; each is stopped (and its database dropped) after.
    Their data dirs are traversable by other uids, as the process backend needs as root."""
    base = traversable_dir("demanager-test-")
    started: list[ServerProcess] = []
    request.node.stash[STARTED] = started

    def start(**kwargs: Any) -> ServerProcess:
        proc = ServerProcess(base / f"server{len(started)}", **kwargs)
        started.append(proc)
        return proc.start()

    yield start
    for proc in started:
        proc.close()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def default_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server on the built-in defaults (quota 10, built-in catalog, no object storage,
    auto-stop 3600-86400 s), fake backend; isolate tests by project."""
    proc = ServerProcess(tmp_path_factory.mktemp("default-server"), backend="fake").start()
    yield proc
    proc.close()


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    """A real S3 server (moto) on loopback for the whole session; each test makes its
    own buckets."""
    server = MotoServer().start()
    yield server
    server.stop()


def s3_env(moto: MotoServer, endpoint: str | None = None, **extra: str) -> dict[str, str]:
    """A server's settings for ``moto`` with the deployment's keys (the IAM user's)."""
    return {
        **LOOPBACK_ONLY,
        "DEMANAGER_S3__ENDPOINT_URL": endpoint or moto.endpoint,
        "DEMANAGER_S3__ACCESS_KEY_ID": moto.access_key,
        "DEMANAGER_S3__SECRET_ACCESS_KEY": moto.secret_key,
        **extra,
    }
