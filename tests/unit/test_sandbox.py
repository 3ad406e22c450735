"""The notebook environment allow-list, per-instance user names and the launcher's options."""

from __future__ import annotations

import pytest

from demanager.backends import launch, sandbox

SERVER_ENV = {
    "PATH": "/root/.pyenv/shims:/usr/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "TZ": "UTC",
    "TERM": "xterm",
    "DEMANAGER_BOOTSTRAP_TOKEN": "dmo_secret",
    "DEMANAGER_DATABASE_URL": "postgresql://user:pw@db/dm",
    "AWS_SECRET_ACCESS_KEY": "s3cr3t",
    "JUPYTER_CONFIG_DIR": "/root/.jupyter",
    "PYTHONPATH": "/root/lib",
    "HOME": "/root",
}


def build(extra: dict[str, str] | None = None, own: dict[str, str] | None = None) -> dict[str, str]:
    return sandbox.notebook_env(
        SERVER_ENV,
        python="/opt/nb/bin/python",
        home=__import__("pathlib").Path("/data/volumes/DE-1"),
        extra=extra or {},
        backend_vars=own or {"JUPYTER_TOKEN": "t"},
    )


def test_only_locale_and_terminal_pass_from_the_server() -> None:
    env = build()
    assert {k: env[k] for k in ("LANG", "LC_ALL", "TZ", "TERM")} == {
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TZ": "UTC",
        "TERM": "xterm",
    }
    for secret in ("DEMANAGER_BOOTSTRAP_TOKEN", "DEMANAGER_DATABASE_URL", "AWS_SECRET_ACCESS_KEY"):
        assert secret not in env
    assert "PYTHONPATH" not in env and "JUPYTER_CONFIG_DIR" not in env


def test_home_is_the_work_dir_and_path_starts_with_the_notebook_python() -> None:
    env = build()
    assert env["HOME"] == "/data/volumes/DE-1"
    assert env["PATH"].split(":")[0] == "/opt/nb/bin"
    assert "/root/.pyenv/shims" not in env["PATH"]


def test_the_profile_env_passes_but_the_backend_has_the_last_word() -> None:
    env = build(extra={"OMP_NUM_THREADS": "2", "JUPYTER_TOKEN": "from-catalog"})
    assert env["OMP_NUM_THREADS"] == "2"
    assert env["JUPYTER_TOKEN"] == "t"


def test_no_demanager_variable_passes_from_any_source() -> None:
    env = build(extra={"DEMANAGER_X": "1", "demanager_y": "2"}, own={"DEMANAGER_Z": "3"})
    assert not [k for k in env if k.upper().startswith("DEMANAGER_")]


def test_user_names_are_short_fixed_and_distinct() -> None:
    first = sandbox.user_name("DE-9e957985-ed8e-11f1-8a10-59e5a93ba458")
    assert first.startswith("dm-") and len(first) == 27
    assert sandbox.user_name("DE-9e957985-ed8e-11f1-8a10-59e5a93ba458") == first
    assert sandbox.user_name("DE-9e957985-ed8e-11f1-8a10-59e5a93ba459") != first
    odd = sandbox.user_name("../../etc")
    assert odd.startswith("dm-") and len(odd) == 27 and odd[3:].isalnum()


def test_launcher_options() -> None:
    options = launch.parse(
        [
            *["--cgroup", "/cg/procs", "--uid", "990", "--gid", "991", "--group", "5"],
            *["--cwd", "/w", "--token-file", "/w/t.json", "--", "python", "-m", "jupyterlab"],
        ]
    )
    assert (options.cgroups, options.uid, options.gid, options.groups) == (
        ["/cg/procs"],
        990,
        991,
        [5],
    )
    assert (options.cwd, options.token_file) == ("/w", "/w/t.json")
    assert options.command == ["python", "-m", "jupyterlab"]


@pytest.mark.parametrize(
    "argv",
    [["--uid", "5", "--", "x"], ["--bogus", "1", "--", "x"], ["--cwd", "/"], ["--cwd"]],
)
def test_launcher_refuses_incomplete_options(argv: list[str]) -> None:
    with pytest.raises(ValueError):
        launch.parse(argv)


def test_launcher_fails_closed(capsys: pytest.CaptureFixture[str]) -> None:
    assert launch.main(["--cgroup", "/nonexistent/cgroup.procs", "--", "true"]) == 126
    assert "demanager launch:" in capsys.readouterr().err
