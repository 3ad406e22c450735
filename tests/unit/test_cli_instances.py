"""``demanager instances ...`` against the in-memory API: arguments, output, exit codes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import Result
from typer.testing import CliRunner

from demanager.cli.main import app
from demanager.cli.session import CliDeps
from tests.unit.sdk_fakes import PROJECT, SOMEONE_ELSE, TOKEN, FakeApi

Run = Callable[..., Result]


@pytest.fixture(autouse=True)
def isolated_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in ("DEMANAGER_URL", "DEMANAGER_TOKEN", "DEMANAGER_PROJECT", "DEMANAGER_OUTPUT"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "config.json"
    monkeypatch.setenv("DEMANAGER_CONFIG", str(path))
    return path


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


@pytest.fixture
def opened() -> list[str]:
    return []


@pytest.fixture
def run(api: FakeApi, opened: list[str]) -> Run:
    """Invoke the real ``demanager`` app with the fake transport and fast polling."""

    def invoke(*args: str, logged_in: bool = True, transport: Any = None) -> Result:
        env = (
            {
                "DEMANAGER_URL": "http://dm.test",
                "DEMANAGER_PROJECT": PROJECT,
                "DEMANAGER_TOKEN": TOKEN,
            }
            if logged_in
            else {}
        )
        deps = CliDeps(
            transport=transport or api.transport(),
            poll_interval=0.001,
            max_poll_interval=0.004,
            open_browser=opened.append,
        )
        return CliRunner().invoke(app, list(args), env=env, obj=deps)

    return invoke


def test_list_as_a_table(run: Run, api: FakeApi) -> None:
    api.add(name="alpha")
    api.add(name="beta", status="STOPPED")
    result = run("instances", "list")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "ID", "STATUS", "PROFILE", "FLAVOR", "CREATED", "AUTO-STOP"]
    assert lines[1].startswith("alpha") and "RUNNING" in lines[1]
    assert lines[2].startswith("beta") and "STOPPED" in lines[2]


def test_list_as_json_is_the_wire_answer(run: Run, api: FakeApi) -> None:
    first = api.add(name="alpha")
    result = run("instances", "list", "--output", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"total_count": 1, "instances": [first]}


def test_list_passes_its_filters(run: Run, api: FakeApi) -> None:
    result = run(
        "instances", "list", "--status", "RUNNING", "--all-users", "--sort",
        "creation_timestamp", "--desc", "--limit", "5", "--offset", "2",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert dict(api.requests[-1].url.params) == {
        "de_type": "Notebook",
        "status": "RUNNING",
        "show_self": "false",
        "sortby": "creation_timestamp",
        "order": "desc",
        "limit": "5",
        "offset": "2",
    }


def test_list_pages_are_reported(run: Run, api: FakeApi) -> None:
    for n in range(3):
        api.add(name=f"nb{n}")
    result = run("instances", "list", "--limit", "2")
    assert "2 shown (1-2) of 3 instances" in result.stderr


def test_create_sends_the_options(run: Run, api: FakeApi) -> None:
    result = run(
        "instances", "create", "churn", "--profile", "P", "--flavor", "F",
        "--volume-size", "10", "--auto-stop", "3600", "--description", "hi",
        "--annotation", "team=ml", "--annotation", "cost=1=2", "-o", "json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert api.bodies("POST")[0] == {
        "name": "churn",
        "profile_id": "P",
        "flavor": "F",
        "description": "hi",
        "spec": {
            "storage": {"type": "evs", "location": {"volume_size": 10}},
            "auto_stop": {"enable": True, "duration": 3600},
            "annotations": {"team": "ml", "cost": "1=2"},
        },
    }
    assert json.loads(result.stdout)["status"] == "CREATING"


def test_create_obs_storage(run: Run, api: FakeApi) -> None:
    result = run(
        "instances", "create", "nb", "-p", "P", "-f", "F", "--storage", "obs",
        "--path", "/bucket/dir/",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert api.bodies("POST")[0]["spec"]["storage"] == {
        "type": "obs",
        "location": {"path": "/bucket/dir/"},
    }


@pytest.mark.parametrize(
    "extra",
    [
        ["--path", "/b/d/"],
        ["--storage", "obs", "--volume-size", "5"],
        ["--annotation", "novalue"],
        ["--storage", "nfs"],
    ],
)
def test_create_usage_errors_exit_2_without_a_request(
    run: Run, api: FakeApi, extra: list[str]
) -> None:
    result = run("instances", "create", "nb", "-p", "P", "-f", "F", *extra)
    assert result.exit_code == 2, result.output
    assert api.requests == []


def test_create_wait_reaches_running(run: Run, api: FakeApi) -> None:
    api.after_create = ["CREATING", "CREATING", "RUNNING"]
    result = run("instances", "create", "nb", "-p", "P", "-f", "F", "--wait", "-o", "json")
    assert result.exit_code == 0, result.output
    final = json.loads(result.stdout)
    assert final["status"] == "RUNNING"
    assert final["spec"]["annotations"]["url"].endswith(f"/notebooks/{final['id']}/")


def test_create_wait_ends_4_when_creation_fails(run: Run, api: FakeApi) -> None:
    api.after_create = ["CREATING", "CREATE_FAILED"]
    result = run("instances", "create", "nb", "-p", "P", "-f", "F", "--wait")
    assert result.exit_code == 4, result.output
    assert "CREATE_FAILED" in result.stderr


def test_create_wait_ends_3_on_timeout(run: Run, api: FakeApi) -> None:
    api.after_create = ["CREATING"] * 10_000
    result = run("instances", "create", "nb", "-p", "P", "-f", "F", "--wait", "--timeout", "0.05")
    assert result.exit_code == 3, result.output
    assert "still CREATING" in result.stderr


def test_name_taken_is_an_api_error(run: Run, api: FakeApi) -> None:
    api.add(name="nb")
    result = run("instances", "create", "nb", "-p", "P", "-f", "F")
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: ModelArts.6301: The instance already exists."


def test_get_by_id_and_by_name_of_another_user(run: Run, api: FakeApi) -> None:
    mine = api.add(name="mine")
    theirs = api.add(name="theirs", user=SOMEONE_ELSE)
    by_id = run("instances", "get", mine["id"], "-o", "json")
    assert json.loads(by_id.stdout)["id"] == mine["id"]
    by_name = run("instances", "get", "theirs", "-o", "json")
    assert by_name.exit_code == 0, by_name.output
    assert json.loads(by_name.stdout)["id"] == theirs["id"]
    # The name was looked up among everyone's instances.
    assert api.requests[-1].url.params["show_self"] == "false"


def test_get_table_shows_the_details(run: Run, api: FakeApi) -> None:
    api.add(name="nb", description="[bold]not markup[/bold]")
    result = run("instances", "get", "nb")
    assert result.exit_code == 0, result.output
    assert "[bold]not markup[/bold]" in result.stdout
    assert "http://dm.test/notebooks/" in result.stdout


def test_unknown_instance_exits_1_with_the_code(run: Run) -> None:
    result = run("instances", "get", "nope")
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: ModelArts.6309: The instance nope does not exist."


def test_not_logged_in_exits_5(run: Run, api: FakeApi) -> None:
    result = run("instances", "list", logged_in=False)
    assert result.exit_code == 5
    assert result.stderr.startswith("error: not logged in")
    assert api.requests == []


def test_unreachable_server_exits_5(run: Run) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    result = run("instances", "list", transport=httpx.MockTransport(refuse))
    assert result.exit_code == 5
    assert "cannot reach http://dm.test" in result.stderr


def test_bad_token_exits_1(run: Run) -> None:
    result = run("instances", "list", "--token", "wrong")
    assert result.exit_code == 1
    assert "ModelArts.6620" in result.stderr


def test_connection_options_override_the_environment(run: Run, api: FakeApi) -> None:
    result = run("instances", "list", "--project", "other")
    assert result.exit_code == 1
    assert "ModelArts.0210" in result.stderr
    assert "/v1/other/" in str(api.requests[-1].url)


def test_stop_wait(run: Run, api: FakeApi) -> None:
    api.add(name="nb")
    result = run("instances", "stop", "nb", "--wait")
    assert result.exit_code == 0, result.output
    assert "RUNNING -> STOPPING" in result.stdout
    assert "nb is STOPPED" in result.stderr
    assert api.bodies("POST") == [{"action": "stop"}]


def test_start_json_is_the_action_answer(run: Run, api: FakeApi) -> None:
    api.add(name="nb", status="STOPPED")
    result = run("instances", "start", "nb", "--wait", "-o", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"current_status": "STARTING", "previous_state": "STOPPED"}


def test_refused_action_exits_1(run: Run, api: FakeApi) -> None:
    api.add(name="nb", status="STOPPED")
    result = run("instances", "restart", "nb")
    assert result.exit_code == 1
    assert "ModelArts.6357" in result.stderr


def test_delete_needs_yes_when_not_interactive(run: Run, api: FakeApi) -> None:
    api.add(name="nb", status="STOPPED")
    result = run("instances", "delete", "nb")
    assert result.exit_code == 2
    assert "--yes" in result.stderr
    assert not [r for r in api.requests if r.method == "DELETE"]


def test_delete_yes(run: Run, api: FakeApi) -> None:
    instance = api.add(name="nb", status="STOPPED")
    result = run("instances", "delete", "nb", "--yes", "--wait", "-o", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"instance_id": instance["id"]}
    assert api.instances == {}


def test_delete_running_exits_1(run: Run, api: FakeApi) -> None:
    api.add(name="nb")
    result = run("instances", "delete", "nb", "--yes")
    assert result.exit_code == 1
    assert "ModelArts.6304" in result.stderr


def test_update_bodies(run: Run, api: FakeApi) -> None:
    api.add(name="nb")
    assert run("instances", "update", "nb", "--description", "d").exit_code == 0
    assert run("instances", "update", "nb", "--auto-stop", "7200").exit_code == 0
    assert run("instances", "update", "nb", "--no-auto-stop", "-o", "json").exit_code == 0
    assert api.bodies("PUT") == [
        {"description": "d"},
        {"spec": {"auto_stop": {"enable": True, "duration": 7200}}},
        {"spec": {"auto_stop": {"enable": False}}},
    ]


@pytest.mark.parametrize("args", [[], ["--auto-stop", "3600", "--no-auto-stop"]])
def test_update_usage_errors(run: Run, api: FakeApi, args: list[str]) -> None:
    api.add(name="nb")
    result = run("instances", "update", "nb", *args)
    assert result.exit_code == 2
    assert not [r for r in api.requests if r.method == "PUT"]


def test_open_prints_and_opens(run: Run, api: FakeApi, opened: list[str]) -> None:
    instance = api.add(name="nb")
    url = f"http://dm.test/notebooks/{instance['id']}/lab?token=dmg_signed"
    printed = run("instances", "open", "nb", "--print")
    assert (printed.exit_code, printed.stdout.strip(), opened) == (0, url, [])
    launched = run("instances", "open", "nb")
    assert (launched.exit_code, opened) == (0, [url])


def test_open_a_stopped_instance_fails(run: Run, api: FakeApi, opened: list[str]) -> None:
    api.add(name="nb", status="STOPPED")
    result = run("instances", "open", "nb")
    assert result.exit_code == 1
    assert "only while RUNNING" in result.stderr
    assert opened == []


def test_wait_command(run: Run, api: FakeApi) -> None:
    instance = api.add(name="nb", status="STARTING")
    api.script[instance["id"]] = ["STARTING", "RUNNING"]
    result = run("instances", "wait", "nb", "--status", "running", "-o", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["status"] == "RUNNING"


def test_wait_for_several_statuses_and_timeout(run: Run, api: FakeApi) -> None:
    api.add(name="nb", status="STARTING")
    result = run("instances", "wait", "nb", "-s", "STOPPED", "-s", "RUNNING", "--timeout", "0.02")
    assert result.exit_code == 3
    assert "RUNNING or STOPPED" in result.stderr


def test_wait_for_an_unknown_status_is_a_usage_error(run: Run, api: FakeApi) -> None:
    api.add(name="nb")
    result = run("instances", "wait", "nb", "--status", "RUNING")
    assert result.exit_code == 2
    assert api.requests == []
