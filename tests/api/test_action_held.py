"""§4.3 cells of statuses the fake backend only holds when it is slow.

A first server (no start delay) brings instances to RUNNING and STOPPED and is
stopped; a second server on the same store, whose fake backend takes a minute
to start anything, then finds:

* instances it creates in ``CREATING``;
* the stopped ones, once started, in ``STARTING``;
* the formerly running ones (their workloads vanished with the first server)
  in ``UNAVAILABLE`` while it relaunches them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.api.helpers import FREE_FLAVOR, act, create, ok
from tests.api.test_action import check_cell
from tests.conftest import client_for
from tests.contract_table import OPERATIONS, expected
from tests.server import ServerProcess, wait_for_status

pytestmark = pytest.mark.slow

CATALOG = str(Path(__file__).parent.parent / "data" / "catalog.yaml")


@dataclass
class Held:
    api: httpx.Client
    spare: dict[str, list[str]]
    """Status -> instances in it that no test has touched yet."""

    def take(self, status: str) -> dict[str, object]:
        view: dict[str, object] = ok(self.api.get(f"/{self.spare[status].pop()}"))
        assert view["status"] == status
        return view


@pytest.fixture(scope="module")
def held(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Held]:
    project = uuid.uuid4().hex
    env = {"DEMANAGER_CATALOG_FILE": CATALOG, "DEMANAGER_INSTANCE_QUOTA": "1000"}
    first = ServerProcess(tmp_path_factory.mktemp("held-first"), backend="fake", env=env).start()
    try:
        with client_for(first, project=project) as api:
            running = [create(api, name=f"u{i}", flavor=FREE_FLAVOR)["id"] for i in range(8)]
            stopped = [create(api, name=f"s{i}", flavor=FREE_FLAVOR)["id"] for i in range(8)]
            for instance_id in running + stopped:
                wait_for_status(api, instance_id, "RUNNING", timeout=30)
            for instance_id in stopped:
                ok(act(api, instance_id, "stop"))
            for instance_id in stopped:
                wait_for_status(api, instance_id, "STOPPED", timeout=30)
        first.stop()
        slow_env = {**env, "DEMANAGER_FAKE__START_DELAY_SECONDS": "600", "DEMANAGER_WORKERS": "64",
                    "DEMANAGER_DATA_DIR": str(first.data_dir)}
        if first.database.url:
            slow_env["DEMANAGER_DATABASE_URL"] = first.database.url
        second = ServerProcess(tmp_path_factory.mktemp("held-second"), backend="fake",
                               env=slow_env).start()
        try:
            with client_for(second, project=project) as api:
                creating = [create(api, name=f"c{i}", flavor=FREE_FLAVOR)["id"] for i in range(8)]
                for instance_id in stopped:
                    ok(act(api, instance_id, "start"))
                for instance_id in running:
                    wait_for_status(api, instance_id, "UNAVAILABLE", timeout=30)
                yield Held(api, {"CREATING": creating, "STARTING": stopped,
                                 "UNAVAILABLE": running})
        finally:
            second.close()
    finally:
        first.close()


@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize("status", ["CREATING", "STARTING", "UNAVAILABLE"])
def test_state_table_held(held: Held, status: str, operation: str) -> None:
    check_cell(held.api, held.take(status), operation, expected(status, operation))


def test_unavailable_shape(held: Held) -> None:
    view = held.take("UNAVAILABLE")
    failed = view["spec"]["failed_reasons"]  # type: ignore[index]
    assert view["error_code"] == failed["code"]
    assert view["spec"]["annotations"]["url"] == ""  # type: ignore[index]
    assert "stop_timestamp" not in view["spec"]["auto_stop"]  # type: ignore[index]
