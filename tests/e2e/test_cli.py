"""The installed ``demanager`` command against a real server process (fake backend).

Each test runs the console script as a child process, with its own
``DEMANAGER_CONFIG`` so the user's real settings are never read or written.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.server import ServerProcess, free_port

PROFILE = "Multi-Engine 1.0 (python3)-cpu"
FLAVOR = "modelarts.vm.cpu.2u"

Cli = Callable[..., subprocess.CompletedProcess[str]]


def installed_command() -> str:
    found = shutil.which("demanager", path=str(Path(sys.executable).parent))
    assert found, "the demanager console script is not installed next to this interpreter"
    return found


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    return tmp_path / "xdg" / "demanager" / "config.json"


@pytest.fixture
def cli(config_path: Path, tmp_path: Path) -> Cli:
    command = installed_command()
    env = {key: value for key, value in os.environ.items() if not key.startswith("DEMANAGER_")}
    env.update({"DEMANAGER_CONFIG": str(config_path), "HOME": str(tmp_path), "COLUMNS": "200"})

    def run(
        *args: str, extra_env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [command, *args],
            env={**env, **(extra_env or {})},
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )

    return run


@pytest.fixture
def logged_in(cli: Cli, server: ServerProcess, project: str, config_path: Path) -> Cli:
    result = cli("login", "--url", server.url, "--project", project, "--token", server.token)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(config_path.stat().st_mode) == 0o600
    return cli


def test_login_writes_an_owner_only_config(
    logged_in: Cli, server: ServerProcess, project: str, config_path: Path
) -> None:
    assert json.loads(config_path.read_text()) == {
        "url": server.url,
        "project": project,
        "token": server.token,
    }


def test_create_list_stop_delete(logged_in: Cli) -> None:
    cli = logged_in
    created = cli(
        "instances", "create", "e2e-nb", "--profile", PROFILE, "--flavor", FLAVOR,
        "--volume-size", "6", "--annotation", "team=qa", "--wait", "--output", "json",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    instance = json.loads(created.stdout)
    assert instance["status"] == "RUNNING"
    assert instance["spec"]["storage"]["location"]["volume_size"] == 6
    assert instance["spec"]["annotations"]["team"] == "qa"
    assert instance["spec"]["annotations"]["url"]

    table = cli("instances", "list")
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()[:2]
    assert header.split()[:3] == ["NAME", "ID", "STATUS"]
    assert row.split()[:3] == ["e2e-nb", instance["id"], "RUNNING"]

    listed = cli("instances", "list", "--output", "json")
    assert listed.returncode == 0, listed.stderr
    page = json.loads(listed.stdout)
    assert page["total_count"] == 1
    assert [i["id"] for i in page["instances"]] == [instance["id"]]

    opened = cli("instances", "open", "e2e-nb", "--print")
    assert opened.returncode == 0, opened.stderr
    link = opened.stdout.strip()
    assert link.startswith(instance["spec"]["annotations"]["url"] + "lab?token=dmg_")
    with httpx.Client() as browser:  # the link alone gets through the proxy, and sets a cookie
        lab = browser.get(link, follow_redirects=True)
        assert lab.status_code == 200, lab.text
        assert lab.json()["path"] == f"/notebooks/{instance['id']}/lab"  # the fake's upstream
        assert "token=" not in str(lab.url) and browser.cookies.get("demanager-notebook")

    refused = cli("instances", "delete", "e2e-nb", "--yes")
    assert refused.returncode == 1
    assert "error: ModelArts.6304:" in refused.stderr

    stopped = cli("instances", "stop", "e2e-nb", "--wait")
    assert stopped.returncode == 0, stopped.stderr
    assert "RUNNING -> STOPPING" in stopped.stdout
    shown = json.loads(cli("instances", "get", instance["id"], "-o", "json").stdout)
    assert shown["status"] == "STOPPED"

    unconfirmed = cli("instances", "delete", "e2e-nb")
    assert unconfirmed.returncode == 2

    deleted = cli("instances", "delete", "e2e-nb", "--yes", "-o", "json")
    assert deleted.returncode == 0, deleted.stderr
    assert json.loads(deleted.stdout) == {"instance_id": instance["id"]}

    gone = cli("instances", "get", "e2e-nb")
    assert gone.returncode == 1
    assert gone.stderr.startswith("error: ModelArts.6309: ")


def test_start_restart_update_wait(logged_in: Cli) -> None:
    cli = logged_in
    assert cli("instances", "create", "cycle", "-p", PROFILE, "-f", FLAVOR, "-w").returncode == 0
    assert cli("instances", "stop", "cycle", "--wait").returncode == 0
    started = cli("instances", "start", "cycle", "--wait", "-o", "json")
    assert started.returncode == 0, started.stderr
    assert json.loads(started.stdout)["previous_state"] == "STOPPED"
    assert cli("instances", "restart", "cycle", "--wait").returncode == 0

    updated = cli("instances", "update", "cycle", "--auto-stop", "3600", "-o", "json")
    assert updated.returncode == 0, updated.stderr
    assert json.loads(updated.stdout)["spec"]["auto_stop"]["duration"] == 3600

    waited = cli("instances", "wait", "cycle", "--status", "RUNNING", "-o", "json")
    assert waited.returncode == 0, waited.stderr
    timed_out = cli("instances", "wait", "cycle", "--status", "STOPPED", "--timeout", "0.5")
    assert timed_out.returncode == 3
    assert "still RUNNING" in timed_out.stderr


def test_failed_creation_exits_4(logged_in: Cli) -> None:
    result = logged_in(
        "instances", "create", "doomed", "-p", "Failing profile", "-f", FLAVOR, "--wait"
    )
    assert result.returncode == 4
    assert "CREATE_FAILED" in result.stderr


def test_unknown_instance_exits_1_with_the_code(logged_in: Cli) -> None:
    result = logged_in("instances", "get", "DE-00000000-0000-1000-8000-000000000000")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("error: ModelArts.6309: ")
    assert len(result.stderr.strip().splitlines()) == 1


def test_bad_input_is_refused_by_the_server(logged_in: Cli) -> None:
    result = logged_in("instances", "create", "nb", "-p", PROFILE, "-f", "no.such.flavor")
    assert result.returncode == 1
    assert "ModelArts.6323" in result.stderr


def test_not_logged_in_exits_5(cli: Cli) -> None:
    result = cli("instances", "list")
    assert result.returncode == 5
    assert result.stderr.startswith("error: not logged in")


def test_server_down_exits_5(cli: Cli, project: str) -> None:
    result = cli(
        "instances", "list", "--url", f"http://127.0.0.1:{free_port()}", "--project", project,
        "--token", "t",
    )  # fmt: skip
    assert result.returncode == 5
    assert "cannot reach" in result.stderr


def test_usage_error_exits_2(logged_in: Cli) -> None:
    assert logged_in("instances", "list", "--sort", "size").returncode == 2


def test_connection_options_without_login(cli: Cli, server: ServerProcess, project: str) -> None:
    env = {"DEMANAGER_URL": server.url, "DEMANAGER_PROJECT": project}
    result = cli("profiles", "list", "--token", server.token, extra_env=env)
    assert result.returncode == 0, result.stderr
    assert PROFILE in result.stdout
    flavors = cli("flavors", "list", "-o", "json", "--token", server.token, extra_env=env)
    assert FLAVOR in {f["name"] for f in json.loads(flavors.stdout)["flavors"]}


def test_events_lists_and_follows_the_log(
    logged_in: Cli, config_path: Path, tmp_path: Path
) -> None:
    cli = logged_in
    created = cli("instances", "create", "logged", "-p", PROFILE, "-f", FLAVOR, "-w", "-o", "json")
    assert created.returncode == 0, created.stderr
    instance_id = json.loads(created.stdout)["id"]

    listed = cli("instances", "events", "logged")
    assert listed.returncode == 0, listed.stderr
    kinds = [line.split()[2] for line in listed.stdout.splitlines()]
    assert kinds == ["created", "launched", "ready"]
    assert "Ready: the notebook server answered" in listed.stdout

    env = {key: value for key, value in os.environ.items() if not key.startswith("DEMANAGER_")}
    env.update({"DEMANAGER_CONFIG": str(config_path), "HOME": str(tmp_path)})
    follower = subprocess.Popen(
        [installed_command(), "instances", "events", instance_id, "--follow", "-o", "json"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert follower.stdout is not None
        past = [json.loads(follower.stdout.readline())["kind"] for _ in range(3)]
        assert past == ["created", "launched", "ready"]
        # Only now, with the stream open: these arrive live.
        assert cli("instances", "stop", "logged").returncode == 0
        live = [json.loads(follower.stdout.readline()) for _ in range(2)]
        assert [e["kind"] for e in live] == ["stop_requested", "stopped"]
        assert live[0]["message"].startswith("Stop requested by user ")
        assert follower.poll() is None, "--follow keeps following"
    finally:
        follower.terminate()
        follower.communicate(timeout=10)  # reaps it and closes its pipes


def run_in_terminal(args: list[str], env: dict[str, str], timeout: float = 60) -> tuple[int, str]:
    """Run the command with stdout and stderr on pseudo-terminals, as a person would;
    what it wrote to stderr (ANSI sequences removed) and its exit code."""
    out_master, out_slave = os.openpty()
    err_master, err_slave = os.openpty()
    proc = subprocess.Popen(
        args, env={**env, "TERM": "xterm", "COLUMNS": "160"}, stdin=subprocess.DEVNULL,
        stdout=out_slave, stderr=err_slave,
    )  # fmt: skip
    os.close(out_slave)
    os.close(err_slave)
    written = bytearray()
    open_fds = {out_master, err_master}
    deadline = time.monotonic() + timeout
    try:
        while open_fds and time.monotonic() < deadline:
            ready, _, _ = select.select(list(open_fds), [], [], 0.5)
            for fd in ready:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:  # EIO: the command closed its end
                    chunk = b""
                if not chunk:
                    open_fds.discard(fd)
                elif fd == err_master:
                    written += chunk
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(out_master)
        os.close(err_master)
    ansi = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
    text = ansi.sub("", written.decode(errors="replace"))
    return code, text.replace("\r", "\n")


def test_a_watched_wait_shows_the_events_of_a_start(
    logged_in: Cli, config_path: Path, tmp_path: Path
) -> None:
    cli = logged_in
    assert cli("instances", "create", "shown", "-p", PROFILE, "-f", FLAVOR, "-w").returncode == 0
    assert cli("instances", "stop", "shown", "--wait").returncode == 0

    env = {key: value for key, value in os.environ.items() if not key.startswith("DEMANAGER_")}
    env.update({"DEMANAGER_CONFIG": str(config_path), "HOME": str(tmp_path)})
    code, stderr = run_in_terminal([installed_command(), "instances", "start", "shown", "-w"], env)
    assert code == 0, stderr
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    events = [line for line in lines if re.match(r"^\+\d+\.\ds  ", line)]
    assert [line.split("  ", 1)[1] for line in events[:2]] == [
        "Start requested by user admin.",
        "Launched the notebook server.",
    ]
    assert re.match(r"^\+\d+\.\ds  Ready: the notebook server answered \d+\.\d s", events[2])
    assert len(events) == 3, "only the start's events, not the stop's before it"
    # The live line names the phase the events tell.
    assert any(re.search(r"shown .* ready in \d+\.\d s", line) for line in lines), lines
    assert "shown is RUNNING" in lines
