"""Whole GPUs from a declared inventory: each given to one instance at a time, shown in
``spec.extend_params``, given back at stop, never double-booked by racing replicas.

Real servers on the fake backend (which assigns GPUs it is given as a list, as the
docker backend does); tests/e2e/test_limits.py shows a notebook seeing its GPUs.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.api.helpers import act, assert_error, ok
from tests.conftest import client_for
from tests.server import ServerProcess, TestDatabase, wait_for_status

PROFILE = "Multi-Engine 1.0 (python3)-gpu"
CPU_PROFILE = "Multi-Engine 1.0 (python3)-cpu"
GPU = "test.gpu.1"
FREE_GPU = "test.gpu.free"
CPU = "test.cpu"

CATALOG = f"""
profiles:
  - id: "{PROFILE}"
    flavor_type: GPU
  - id: "{CPU_PROFILE}"
    flavor_type: CPU
flavors:
  - name: {GPU}
    type: GPU
    params: {{CPU: 1, GPU: 1, memory: 1GiB}}
  - name: {FREE_GPU}
    type: GPU
    promo_type: Free
    params: {{CPU: 1, GPU: 1, memory: 1GiB}}
  - name: {CPU}
    type: CPU
    params: {{CPU: 1, GPU: 0, memory: 1GiB}}
"""


def _body(name: str, flavor: str = GPU) -> dict[str, Any]:
    profile = CPU_PROFILE if flavor == CPU else PROFILE
    return {"name": name, "profile_id": profile, "flavor": flavor,
            "spec": {"storage": {"type": "evs"}}}


def _gpus(view: dict[str, Any]) -> str | None:
    params = view["spec"]["extend_params"]
    return None if params is None else str(params["gpus"])


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    path = tmp_path / "catalog.yaml"
    path.write_text(CATALOG, encoding="utf-8")
    return path


@pytest.fixture(params=[1, 2], ids=["one-server", "two-replicas"])
def servers(
    request: pytest.FixtureRequest,
    server_factory: Callable[..., ServerProcess],
    catalog: Path,
) -> Iterator[list[ServerProcess]]:
    env = {"DEMANAGER_CATALOG_FILE": str(catalog), "DEMANAGER_SECRET_KEY": uuid.uuid4().hex,
           "DEMANAGER_INSTANCE_QUOTA": "100", "DEMANAGER_GPUS": "0,1"}
    if request.param == 1:
        yield [server_factory(env=env)]
        return
    database = TestDatabase()
    try:
        first = server_factory(env=env, database=database)
        shared = database.url or f"sqlite+aiosqlite:///{first.data_dir / 'demanager.db'}"
        second = server_factory(env={**env, "DEMANAGER_DATABASE_URL": shared}, database=database)
        yield [first, second]
    finally:
        database.drop()


def test_each_gpu_goes_to_one_instance_and_comes_back_at_stop(
    servers: list[ServerProcess],
) -> None:
    project = uuid.uuid4().hex
    clients = [client_for(s, project=project) for s in servers]
    api = clients[0]
    try:
        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(
                lambda n: clients[n % len(clients)].post("", json=_body(f"gpu-{n}")), range(6)
            ))
        codes = sorted("ok" if r.status_code == 200 else r.json()["error_code"] for r in answers)
        assert codes == ["ModelArts.6329"] * 4 + ["ok"] * 2, "two GPUs: two instances"
        ids = [r.json()["id"] for r in answers if r.status_code == 200]
        views = [wait_for_status(api, i, "RUNNING") for i in ids]
        assert sorted(_gpus(v) or "" for v in views) == ["0", "1"]
        assert all(v["flavor_details"]["status"] == "soldOut" for v in views)
        listed = ok(api.get(f"{servers[0].url}/v1/{project}/demanager/flavors"))
        flavors = {f["name"]: f for f in listed["flavors"]}
        assert flavors[GPU]["status"] == "soldOut" and flavors[CPU]["status"] == "onSale"

        # A CPU flavor still runs, with no GPU.
        cpu = ok(api.post("", json=_body("cpu", CPU)))
        assert _gpus(wait_for_status(api, cpu["id"], "RUNNING")) is None

        # A free GPU flavor queues for a GPU, and gets the one a stop gives back.
        waiting = ok(api.post("", json=_body("free", FREE_GPU)))
        assert waiting["status"] == "CREATE_QUEUING" and _gpus(waiting) is None
        freed = _gpus(views[0])
        ok(act(clients[-1], ids[0], "stop"))
        assert _gpus(wait_for_status(api, ids[0], "STOPPED")) is None
        assert _gpus(wait_for_status(api, waiting["id"], "RUNNING")) == freed

        # Nothing is free again: a start of the stopped one answers 6360.
        assert_error(act(api, ids[0], "start"), "ModelArts.6360")
        ok(act(api, waiting["id"], "stop"))
        wait_for_status(api, waiting["id"], "STOPPED")
        assert ok(act(api, ids[0], "start"))["current_status"] == "STARTING"
        assert _gpus(wait_for_status(api, ids[0], "RUNNING")) == freed
    finally:
        for c in clients:
            c.close()
