"""Shared fixtures: real server processes (see ``tests/server.py``)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server import ServerProcess

MINIMAL_BODY: dict[str, Any] = {
    "name": "nb",
    "profile_id": "Multi-Engine 1.0 (python3)-cpu",
    "flavor": "modelarts.vm.cpu.2u",
    "spec": {"storage": {"type": "evs"}},
}


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
    with server.client(project=project) as client:
        yield client


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start servers with custom settings; each is stopped (and its database dropped) after."""
    started: list[ServerProcess] = []

    def start(**kwargs: Any) -> ServerProcess:
        proc = ServerProcess(tmp_path / f"server{len(started)}", **kwargs)
        started.append(proc)
        return proc.start()

    yield start
    for proc in started:
        proc.close()
