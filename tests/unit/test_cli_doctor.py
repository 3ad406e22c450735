"""``demanager doctor`` and the checks ``serve`` makes before it starts: one line per
problem, and an exit code a script can test."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from demanager.cli.main import app
from tests.server import notebook_python_env, traversable_dir


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    # As root the process backend needs a data dir its instances' uids can traverse.
    base = traversable_dir("demanager-doctor-")
    for key, value in notebook_python_env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("DEMANAGER_DATA_DIR", str(base / "data"))
    yield base
    shutil.rmtree(base, ignore_errors=True)


def test_doctor_passes_on_the_defaults(env: Path) -> None:
    result = CliRunner().invoke(app, ["doctor"])
    assert result.exit_code == 0, result.output
    assert "ok  catalog: 8 profiles" in result.output
    assert "not created yet" in result.output
    assert "backend process: ready" in result.output


def test_doctor_shows_the_host_and_the_flavors_it_can_never_fit(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEMANAGER_PROCESS__CPUS", "4")
    monkeypatch.setenv("DEMANAGER_PROCESS__MEMORY", "16GiB")
    monkeypatch.setenv("DEMANAGER_GPUS", "0,1")
    result = CliRunner().invoke(app, ["doctor"])
    assert result.exit_code == 0, result.output  # a size this host cannot run is no fault
    assert ": 4 CPUs, 16.0 GiB memory, GPUs 0,1" in result.output
    never = next(line for line in result.output.splitlines() if "sold out for good" in line)
    # 8 CPUs or 32 GiB and more cannot fit; the 2-CPU, 8 GiB and free CPU flavors can.
    assert never.endswith(
        "modelarts.bm.gpu.v100NV32, modelarts.kat1.xlarge, modelarts.vm.cpu.8u, "
        "modelarts.vm.gpu.p100, modelarts.vm.gpu.v100"
    ), never


def test_doctor_names_an_unknown_backend(env: Path) -> None:
    result = CliRunner().invoke(app, ["doctor", "--backend", "nope"])
    assert result.exit_code == 1
    assert "unknown backend 'nope'; installed: " in result.output
    assert "process" in result.output


def test_doctor_reports_a_bad_catalog_section_for_the_backend(env: Path) -> None:
    catalog = env / "catalog.yaml"
    catalog.write_text(
        "profiles:\n"
        "  - {id: p, flavor_type: CPU, launch: {process: {command: [x], nonsense: 1}}}\n"
        "flavors:\n  - {name: f, type: CPU, params: {CPU: 1}}\n",
        encoding="utf-8",
    )
    result = CliRunner().invoke(app, ["doctor", "--catalog", str(catalog)])
    assert result.exit_code == 1
    assert "profile 'p': bad launch.process section in the catalog: nonsense" in result.output


def test_doctor_reports_an_old_schema(env: Path) -> None:
    from demanager.settings import load_settings
    from demanager.store.database import upgrade

    (env / "data").mkdir()
    upgrade(load_settings().sqlalchemy_url, "0001")
    result = CliRunner().invoke(app, ["doctor"])
    assert result.exit_code == 1
    assert "schema at 0001" in result.output and "demanager db upgrade" in result.output



@pytest.fixture(autouse=True)
def _logging_restored() -> Iterator[None]:
    """``serve`` run in this process sets up the server's logging (a handler on the
    root logger writing to the stderr of the moment, CliRunner's, which it closes):
    put back what was there, so that no later test logs into a closed stream."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_serve_refuses_an_unknown_setting_of_a_backend_in_one_line(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEMANAGER_DOCKER__BOGUS", "1")
    result = CliRunner().invoke(app, ["serve", "--backend", "docker", "--port", "1"])
    assert result.exit_code == 2
    assert "DEMANAGER_DOCKER__BOGUS: Extra inputs are not permitted" in result.output


def test_serve_refuses_an_unknown_backend_in_one_line(env: Path) -> None:
    result = CliRunner().invoke(app, ["serve", "--backend", "nope", "--port", "1"])
    assert result.exit_code == 2
    assert result.output.strip().startswith("error: unknown backend 'nope'")


def test_a_backend_section_merges_the_config_file_under_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from demanager.settings import load_settings

    config = tmp_path / "demanager.yaml"
    config.write_text("docker:\n  network: from-file\n  pull: never\n", encoding="utf-8")
    monkeypatch.setenv("DEMANAGER_CONFIG_FILE", str(config))
    monkeypatch.setenv("DEMANAGER_DOCKER__NETWORK", "from-env")
    settings = load_settings()
    assert (settings.docker.network, settings.docker.pull) == ("from-env", "never")


def test_doctor_says_how_obsfs_buckets_are_served(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEMANAGER_S3__ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("DEMANAGER_S3__OBSFS_MOUNT", "sync")
    result = CliRunner().invoke(app, ["doctor"])
    assert "ok  obsfs buckets: synced copies, as DEMANAGER_S3__OBSFS_MOUNT=sync asks" in (
        result.output)
    # Demanded and impossible: a problem, and serve refuses to start.
    monkeypatch.setenv("DEMANAGER_S3__OBSFS_MOUNT", "fuse")
    monkeypatch.setenv("DEMANAGER_S3__RCLONE", str(env / "no-rclone"))
    result = CliRunner().invoke(app, ["doctor"])
    assert result.exit_code == 1
    assert "problem  obsfs buckets: DEMANAGER_S3__OBSFS_MOUNT=fuse, but " in result.output
    served = CliRunner().invoke(app, ["serve", "--port", "1"])
    assert served.exit_code == 2
    assert "DEMANAGER_S3__OBSFS_MOUNT=fuse, but " in served.output
