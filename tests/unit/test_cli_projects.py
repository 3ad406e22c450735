"""``demanager projects``: what each command prints, and its exit codes."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from demanager.cli.main import app
from tests.server import traversable_dir


@pytest.fixture
def data_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    base = traversable_dir("demanager-projects-")
    monkeypatch.setenv("DEMANAGER_DATA_DIR", str(base / "data"))
    monkeypatch.setenv("DEMANAGER_INSTANCE_QUOTA", "7")
    yield base / "data"
    shutil.rmtree(base, ignore_errors=True)


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["projects", *args])
    return result.exit_code, result.output.strip()


def test_quota_freeze_and_list(data_dir: Path) -> None:
    assert _run("list") == (0, "")
    assert _run("quota", "team-a", "3") == (0, "project team-a: instance quota 3")
    assert _run("quota", "team-b", "0") == (0, "project team-b: instance quota 0")
    assert _run("freeze", "team-c") == (0, "froze project team-c and 0 instances")
    assert _run("list") == (0, "\n".join([
        "team-a\tquota 3\t0 live\t0 frozen\tactive",
        "team-b\tquota 0\t0 live\t0 frozen\tactive",
        "team-c\tquota 7 (default)\t0 live\t0 frozen\tfrozen",
    ]))
    assert _run("freeze", "team-c", "--stop") == (
        0, "froze project team-c and 0 instances; asked 0 running instances to stop")
    assert _run("unfreeze", "team-c") == (0, "unfroze project team-c and 0 instances")
    assert _run("quota", "team-a", "--default") == (
        0, "project team-a: instance quota 7 (the default)")
    code, listed = _run("list")
    assert code == 0 and "team-a\tquota 7 (default)\t0 live\t0 frozen\tactive" in listed
    assert "team-c\tquota 7 (default)\t0 live\t0 frozen\tactive" in listed


@pytest.mark.parametrize(
    "args",
    [
        ["quota", "team-a"],
        ["quota", "team-a", "1", "--default"],
        ["quota", "team-a", "-3"],
        ["quota", "team-a", "many"],
        ["quota", "x" * 65, "1"],
        ["freeze", ""],
    ],
)
def test_wrong_usage_exits_2_and_changes_nothing(data_dir: Path, args: list[str]) -> None:
    code, _ = _run(*args)
    assert code == 2
    assert _run("list") == (0, "")


def test_an_unknown_instance_is_one_line_and_exit_1(data_dir: Path) -> None:
    for command in ("freeze-instance", "unfreeze-instance"):
        assert _run(command, "DE-nope") == (1, "error: The instance 'DE-nope' does not exist.")
