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
