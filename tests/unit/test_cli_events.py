"""Live progress in the CLI: the phases a wait shows, its event lines, the watched
``--wait`` against the in-memory API, and ``demanager instances events``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import Result
from typer.testing import CliRunner

from demanager.cli import output, progress
from demanager.cli.events import event_text
from demanager.cli.main import app
from demanager.cli.progress import event_line, phase_of
from demanager.cli.session import CliDeps
from demanager.client import Event
from tests.unit.sdk_fakes import PROJECT, TOKEN, FakeApi

Run = Callable[..., Result]


def event(kind: str, message: str = "", at: int = 1_000, **detail: Any) -> Event:
    return Event(
        id=1, instance_id="DE-1", at=at, kind=kind, actor="engine", message=message, detail=detail
    )


@pytest.mark.parametrize(
    ("kind", "detail", "current", "phase"),
    [
        ("created", {}, None, "launching"),
        ("start_requested", {}, "stopped", "launching"),
        ("launched", {"attempt": 1}, "launching", "waiting for JupyterLab"),
        ("ready", {"start_ms": 1834}, "waiting for JupyterLab", "ready in 1.8 s"),
        ("ready", {}, None, "ready"),
        ("queued", {"rank": 3}, None, "queued #3"),
        ("failed", {}, "launching", "failed"),
        # Kinds this client does not know leave the phase as it was.
        ("extended", {"by_s": 3600}, "waiting for JupyterLab", "waiting for JupyterLab"),
        ("auto_stop_warning", {}, None, None),
    ],
)
def test_phases(kind: str, detail: dict[str, Any], current: str | None, phase: str | None) -> None:
    assert phase_of(event(kind, **detail), current) == phase


def test_event_lines_show_the_offset_and_escape_the_message() -> None:
    line = event_line(event("ready", "Ready [bold]now[/bold]", at=2_800), since_ms=1_000)
    assert line == r"[dim]   +1.8s[/]  Ready \[bold]now\[/bold]"
    assert event_line(event("extended", "", at=900), since_ms=1_000).endswith("  extended")


# --- the commands ------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def isolated_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("DEMANAGER_URL", "DEMANAGER_TOKEN", "DEMANAGER_PROJECT", "DEMANAGER_OUTPUT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DEMANAGER_CONFIG", str(tmp_path / "config.json"))


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


@pytest.fixture
def run(api: FakeApi) -> Run:
    def invoke(*args: str, transport: httpx.BaseTransport | None = None) -> Result:
        env = {
            "DEMANAGER_URL": "http://dm.test",
            "DEMANAGER_PROJECT": PROJECT,
            "DEMANAGER_TOKEN": TOKEN,
            "COLUMNS": "160",
        }
        deps = CliDeps(
            transport=transport or api.transport(), poll_interval=0.01, max_poll_interval=0.02
        )
        return CliRunner().invoke(app, list(args), env=env, obj=deps)

    return invoke


def engine_on_start(api: FakeApi) -> httpx.MockTransport:
    """The fake API, plus the events a real engine writes when a start is accepted."""

    def answer(request: httpx.Request) -> httpx.Response:
        response = api(request)
        if request.method == "POST" and request.url.path.endswith("/action"):
            instance_id = request.url.path.split("/")[-2]
            api.log(instance_id, "start_requested", "Start requested by user alice.")
            api.log(instance_id, "launched", "Launched the notebook server.", attempt=1)
            api.log(
                instance_id,
                "ready",
                "Ready: the notebook server answered 1.8 s after the request.",
                start_ms=1834,
            )
        return response

    return httpx.MockTransport(answer)


def test_a_piped_wait_polls_only_and_prints_as_before(run: Run, api: FakeApi) -> None:
    nb = api.add(name="nb", status="STOPPED")
    result = run("instances", "start", "nb", "--wait", transport=engine_on_start(api))
    assert result.exit_code == 0, result.output
    assert result.stdout == "nb: STOPPED -> STARTING\n"
    assert result.stderr == "nb is RUNNING\n"
    assert not [r for r in api.requests if "/events" in r.url.path], "no event stream"
    assert api.events[nb["id"]]


def test_a_watched_wait_prints_the_events_of_the_start(
    run: Run, api: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(output, "is_interactive", lambda: True)
    monkeypatch.setattr(progress, "is_interactive", lambda: True)
    nb = api.add(name="nb", status="STOPPED")
    api.log(nb["id"], "stopped", "Stopped; user alice asked for it (stop).")
    api.script[nb["id"]] = ["STARTING", "STARTING", "STARTING", "RUNNING"]
    result = run("instances", "start", "nb", "--wait", transport=engine_on_start(api))
    assert result.exit_code == 0, result.output
    lines = [line.strip() for line in result.stderr.splitlines()]
    assert "+0.0s  Start requested by user alice." in lines
    assert "+0.1s  Launched the notebook server." in lines
    assert "+0.2s  Ready: the notebook server answered 1.8 s after the request." in lines
    assert not any("Stopped;" in line for line in lines), "only what the start did"
    assert "nb is RUNNING" in lines
    # The stream resumed after the newest event before the action.
    assert api.streams()[0].headers["Last-Event-ID"] == "1"


def test_events_lists_the_log(run: Run, api: FakeApi) -> None:
    nb = api.add(name="nb")
    api.log(nb["id"], "created", "Created by user alice.")
    api.log(nb["id"], "extended", "Auto-stop extended by [b]1 h[/b].")
    result = run("instances", "events", "nb")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].endswith("created           engine           Created by user alice.")
    assert lines[1].endswith("Auto-stop extended by [b]1 h[/b]."), "printed as typed"

    as_json = run("instances", "events", nb["id"], "-o", "json", "--after", "1")
    assert json.loads(as_json.stdout)["events"][0]["kind"] == "extended"
    assert dict(api.requests[-1].url.params) == {"after": "1", "limit": "100"}


def test_events_follow_prints_json_lines_until_interrupted(run: Run, api: FakeApi) -> None:
    nb = api.add(name="nb")
    api.log(nb["id"], "created", "Created.")

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/stream"):
            if len(api.streams()) == 1:
                raise KeyboardInterrupt  # Ctrl-C while following
            api.log(nb["id"], "launched", "Launched.")
        return api(request)

    result = run(
        "instances", "events", "nb", "--follow", "-o", "json", transport=httpx.MockTransport(answer)
    )
    assert result.exit_code == 0, result.output
    kinds = [json.loads(line)["kind"] for line in result.stdout.splitlines()]
    assert kinds == ["created", "launched"]
    assert api.streams()[0].headers["Last-Event-ID"] == "1"


def test_event_text_is_one_line_without_control_characters() -> None:
    text = event_text(event("ready", "Ready.", at=1_700_000_000_000))
    assert text.endswith("ready             engine           Ready.")
    hostile = event_text(event("failed", "Failed\x1b]0;owned\x07\nnext", at=1))
    assert hostile.endswith("Failed\ufffd]0;owned\ufffd\ufffdnext")
    assert "\ufffd" in event_line(event("failed", "a\x1b[2Jb"), since_ms=0)
