"""``demanager login`` and the catalog listings."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from demanager.cli.main import app
from demanager.cli.session import CliDeps
from tests.unit.sdk_fakes import FLAVOR, PROFILE, PROJECT, TOKEN, FakeApi


@pytest.fixture(autouse=True)
def config_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in ("DEMANAGER_URL", "DEMANAGER_TOKEN", "DEMANAGER_PROJECT", "DEMANAGER_OUTPUT"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "home" / "demanager" / "config.json"
    monkeypatch.setenv("DEMANAGER_CONFIG", str(path))
    return path


def test_login_checks_then_saves_owner_only(config_path: Path) -> None:
    api = FakeApi()
    api.add(name="nb")
    result = CliRunner().invoke(
        app,
        ["login", "--url", "http://dm.test/", "--project", PROJECT, "--token", TOKEN],
        obj=CliDeps(transport=api.transport()),
    )
    assert result.exit_code == 0, result.output
    assert str(config_path) in result.stderr
    assert json.loads(config_path.read_text()) == {
        "url": "http://dm.test",
        "project": PROJECT,
        "token": TOKEN,
    }
    assert stat.S_IMODE(config_path.stat().st_mode) == 0o600
    assert api.requests[0].url.params["limit"] == "1"

    # Later commands need no connection options at all.
    listed = CliRunner().invoke(
        app, ["instances", "list", "-o", "json"], obj=CliDeps(transport=api.transport())
    )
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.stdout)["total_count"] == 1


def test_login_prompts_for_the_token_without_echo(config_path: Path) -> None:
    api = FakeApi()
    result = CliRunner().invoke(
        app,
        ["login", "--url", "http://dm.test", "--project", PROJECT],
        input=f"{TOKEN}\n",
        obj=CliDeps(transport=api.transport()),
    )
    assert result.exit_code == 0, result.output
    assert TOKEN not in result.output
    assert json.loads(config_path.read_text())["token"] == TOKEN


def test_login_with_a_bad_token_saves_nothing(config_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["login", "--url", "http://dm.test", "--project", PROJECT, "--token", "bad"],
        obj=CliDeps(transport=FakeApi().transport()),
    )
    assert result.exit_code == 1
    assert "ModelArts.6620" in result.stderr
    assert not config_path.exists()


def test_login_to_nowhere_exits_5(config_path: Path) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    result = CliRunner().invoke(
        app,
        ["login", "--url", "http://dm.test", "--project", PROJECT, "--token", TOKEN],
        obj=CliDeps(transport=httpx.MockTransport(refuse)),
    )
    assert result.exit_code == 5
    assert not config_path.exists()


def test_login_needs_a_url_scheme(config_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["login", "--url", "dm.test:8000", "--project", PROJECT, "--token", TOKEN],
        obj=CliDeps(transport=FakeApi().transport()),
    )
    assert result.exit_code == 5
    assert "http://" in result.stderr
    assert not config_path.exists()


ENV = {"DEMANAGER_URL": "http://dm.test", "DEMANAGER_PROJECT": PROJECT, "DEMANAGER_TOKEN": TOKEN}


@pytest.mark.parametrize(
    ("group", "key", "wire"), [("profiles", "profiles", PROFILE), ("flavors", "flavors", FLAVOR)]
)
def test_catalog_json_is_the_wire_answer(group: str, key: str, wire: dict[str, object]) -> None:
    result = CliRunner().invoke(
        app, [group, "list", "-o", "json"], env=ENV, obj=CliDeps(transport=FakeApi().transport())
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {key: [wire]}


def test_catalog_tables() -> None:
    deps = CliDeps(transport=FakeApi().transport())
    profiles = CliRunner().invoke(app, ["profiles", "list"], env=ENV, obj=deps)
    assert profiles.exit_code == 0, profiles.output
    assert "atelier/mul-kernel-cpu-cp36:2.0.5-B003" in profiles.stdout
    flavors = CliRunner().invoke(app, ["flavors", "list"], env=ENV, obj=deps)
    assert flavors.exit_code == 0, flavors.output
    row = flavors.stdout.splitlines()[1].split()
    assert row[:3] == ["modelarts.vm.cpu.2u", "CPU", "onSale"]


def test_output_format_from_the_environment() -> None:
    result = CliRunner().invoke(
        app,
        ["flavors", "list"],
        env={**ENV, "DEMANAGER_OUTPUT": "json"},
        obj=CliDeps(transport=FakeApi().transport()),
    )
    assert json.loads(result.stdout)["flavors"][0]["name"] == FLAVOR["name"]
