"""The flavor's CPUs and memory hold inside a real notebook (process backend, as root)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from demanager.backends import cgroups
from tests.e2e.jupyter import Notebook, outcome
from tests.limits_probe import VISIBLE_CPUS
from tests.server import ServerProcess, wait_for_status, wait_until

pytestmark = pytest.mark.slow

PROFILE = "Multi-Engine 1.0 (python3)-cpu"
FLAVOR = "test.cpu.2u1g"
DEFAULT_CATALOG = Path(cgroups.__file__).parents[1] / "default_catalog.yaml"


def _catalog(tmp_path: Path) -> Path:
    default = yaml.safe_load(DEFAULT_CATALOG.read_text(encoding="utf-8"))
    profile = next(p for p in default["profiles"] if p["id"] == PROFILE)
    catalog = {
        "profiles": [
            {
                "id": PROFILE,
                "flavor_type": "CPU",
                "launch": {"process": {"command": profile["launch"]["process"]["command"]}},
            }
        ],
        "flavors": [
            {"name": FLAVOR, "type": "CPU", "params": {"CPU": 2, "GPU": 0, "memory": "1GiB"}}
        ],
    }
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(catalog), encoding="utf-8")
    return path


def test_a_notebook_gets_its_flavors_cpus_and_memory(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    tracking = cgroups.detect()
    if "memory" not in cgroups.detect_controllers(tracking):
        pytest.skip("no writable memory cgroup controller here (needs root and a cgroup mount)")
    server = server_factory(
        backend="process", env={"DEMANAGER_CATALOG_FILE": str(_catalog(tmp_path))}
    )
    body = {"name": "limits", "profile_id": PROFILE, "flavor": FLAVOR,
            "spec": {"storage": {"type": "evs"}}}
    with server.client() as api:
        created = api.post("", json=body).json()
        instance_id = created["id"]
        running = wait_for_status(api, instance_id, "RUNNING")
        assert running["flavor_details"]["params"]["CPU"] == 2
        assert running["flavor_details"]["params"]["memory"] == "1GiB"
        assert running["spec"]["failed_reasons"] is None
        url = running["spec"]["annotations"]["url"]
        with Notebook(url, server.token) as notebook:
            assert notebook.execute(VISIBLE_CPUS + "\nvisible_cpus()") == "2.0"
            # Every page touched, so the memory is really taken.
            ended = outcome(notebook, "x = b'1' * (2 << 30)\nlen(x)")
            assert ended in ("died", "error: MemoryError"), ended

            def warned() -> bool:
                spec = api.get(f"/{instance_id}").json()["spec"]
                return (spec["failed_reasons"] or {}).get("detail", {}).get("cause") == (
                    "oom_killed"
                )

            wait_until(warned, "the OOM kill shows in failed_reasons")
            shown = api.get(f"/{instance_id}").json()
            assert shown["status"] == "RUNNING"
            assert "memory limit (1 GiB)" in shown["spec"]["failed_reasons"]["message"]
            assert notebook.status() == 200, "the server itself runs on"
            assert notebook.execute("1+1") == "2", "a new kernel works"
        api.post(f"/{instance_id}/action", json={"action": "stop"})
        wait_for_status(api, instance_id, "STOPPED")


GPU_PROFILE = "Multi-Engine 1.0 (python3)-gpu"
GPU_FLAVOR = "test.gpu.1u1g"
BIG_FLAVOR = "test.cpu.big"
NEVER_FLAVOR = "test.cpu.never"
"""A free flavor larger than the whole host: refused, since its queue could never move."""


def _gpu_catalog(tmp_path: Path) -> Path:
    default = yaml.safe_load(DEFAULT_CATALOG.read_text(encoding="utf-8"))
    profile = next(p for p in default["profiles"] if p["id"] == PROFILE)
    launch = {"process": {"command": profile["launch"]["process"]["command"]}}
    catalog = {
        "profiles": [
            {"id": PROFILE, "flavor_type": "CPU", "launch": launch},
            {"id": GPU_PROFILE, "flavor_type": "GPU", "launch": launch},
        ],
        "flavors": [
            {"name": GPU_FLAVOR, "type": "GPU", "params": {"CPU": 1, "GPU": 1, "memory": "1GiB"}},
            {"name": BIG_FLAVOR, "type": "CPU", "params": {"CPU": 1, "memory": "2GiB"}},
            {"name": NEVER_FLAVOR, "type": "CPU", "promo_type": "Free",
             "params": {"CPU": 1, "memory": "8GiB"}},
        ],
    }
    path = tmp_path / "gpu-catalog.yaml"
    path.write_text(yaml.safe_dump(catalog), encoding="utf-8")
    return path


def test_notebooks_see_only_their_own_gpus_and_the_host_is_never_overpromised(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """A host declared with 3 GiB and two GPUs: two 1 GiB GPU notebooks fit, each seeing
    its own GPU in its kernel; then a 2 GiB flavor no longer fits (sold out, 6329), and
    a free flavor larger than the host is refused rather than queued forever."""
    server = server_factory(
        backend="process",
        env={
            "DEMANAGER_CATALOG_FILE": str(_gpu_catalog(tmp_path)),
            "DEMANAGER_GPUS": "GPU-test-a,GPU-test-b",
            "DEMANAGER_PROCESS__CPUS": "4",
            "DEMANAGER_PROCESS__MEMORY": "3GiB",
        },
    )

    def body(name: str, flavor: str, profile: str = PROFILE) -> dict[str, object]:
        return {"name": name, "profile_id": profile, "flavor": flavor,
                "spec": {"storage": {"type": "evs"}}}

    with server.client() as api:
        flavors_url = f"{server.url}/v1/{server.project}/demanager/flavors"
        shown = {f["name"]: f["status"] for f in api.get(flavors_url).json()["flavors"]}
        assert shown == {GPU_FLAVOR: "onSale", BIG_FLAVOR: "onSale", NEVER_FLAVOR: "soldOut"}
        refused = api.post("", json=body("never", NEVER_FLAVOR))
        assert refused.status_code == 400 and refused.json()["error_code"] == "ModelArts.6329"

        ids = [api.post("", json=body(f"gpu{n}", GPU_FLAVOR, GPU_PROFILE)).json()["id"]
               for n in range(2)]
        running = [wait_for_status(api, i, "RUNNING") for i in ids]
        assigned = [r["spec"]["extend_params"]["gpus"] for r in running]
        assert sorted(assigned) == ["GPU-test-a", "GPU-test-b"]
        for view, gpu in zip(running, assigned, strict=True):
            with Notebook(view["spec"]["annotations"]["url"], server.token) as notebook:
                seen = notebook.execute("import os\nos.environ['CUDA_VISIBLE_DEVICES']")
                assert seen == repr(gpu)

        shown = {f["name"]: f["status"] for f in api.get(flavors_url).json()["flavors"]}
        assert shown == {GPU_FLAVOR: "soldOut", BIG_FLAVOR: "soldOut", NEVER_FLAVOR: "soldOut"}
        full = api.post("", json=body("big", BIG_FLAVOR))
        assert full.status_code == 400 and full.json()["error_code"] == "ModelArts.6329"

        api.post(f"/{ids[0]}/action", json={"action": "stop"})
        stopped = wait_for_status(api, ids[0], "STOPPED")
        assert stopped["spec"]["extend_params"] is None
        big = api.post("", json=body("big", BIG_FLAVOR))
        assert big.status_code == 200, big.text
        running_big = wait_for_status(api, big.json()["id"], "RUNNING")
        with Notebook(running_big["spec"]["annotations"]["url"], server.token) as notebook:
            seen = notebook.execute("import os\nos.environ.get('CUDA_VISIBLE_DEVICES')")
            assert seen == "''", "a flavor without GPUs sees none of the host's"
        for instance_id in (ids[1], big.json()["id"]):
            api.post(f"/{instance_id}/action", json={"action": "stop"})
            wait_for_status(api, instance_id, "STOPPED")
