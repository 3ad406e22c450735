"""The notebook zygote on its own, with a probe module in place of Jupyter: what a forked
server inherits (and does not), failures, and the zygote's death and rebuild."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from demanager.backends import zygotes
from demanager.backends.process import LAUNCHER
from demanager.backends.zygote import unsafe_paths

PROBE = """
import json, os, random, sys, time
import email.utils as shared  # preloaded by the zygote: its state is the zygote's
seen = getattr(shared, "dm_probe_mark", None)
shared.dm_probe_mark = os.environ.get("PROBE_NAME")
out = {
    "pid": os.getpid(),
    "sid": os.getsid(0),
    "cwd": os.getcwd(),
    "argv": sys.argv[1:],
    "env": dict(os.environ),
    "fds": sorted(int(fd) for fd in os.listdir("/proc/self/fd")),
    "random": random.random(),
    "mark_seen": seen,
    "path0": sys.path[0],
}
with open(sys.argv[1], "w") as handle:
    json.dump(out, handle)
time.sleep(float(sys.argv[2]) if len(sys.argv) > 2 else 0)
"""


@pytest.fixture
async def zygote(tmp_path: Path) -> AsyncIterator[zygotes.Zygote]:
    built = zygotes.Zygote(
        sys.executable, LAUNCHER, tmp_path / "zygote", preload=("email.utils",),
        extensions=False,
    )
    built.ensure_started()
    yield built
    await built.close()


def _request(work: Path, name: str, *args: str) -> dict[str, Any]:
    return {
        "launcher": ["--cwd", str(work)],
        "env": {"PATH": "/usr/bin:/bin", "PROBE_NAME": name, "JUPYTER_TOKEN": f"tok-{name}"},
        "argv": [sys.executable, "-m", "dm_probe", str(work / f"{name}.json"), *args],
    }


async def _fork(zygote: zygotes.Zygote, work: Path, name: str, *args: str) -> int | None:
    log = os.open(work / f"{name}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        return await zygote.fork(_request(work, name, *args), log)
    finally:
        os.close(log)


async def _output(work: Path, name: str) -> dict[str, Any]:
    path = work / f"{name}.json"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_size:
            return dict(json.loads(path.read_text()))
        await asyncio.sleep(0.02)
    raise AssertionError(f"no output; log: {(work / f'{name}.log').read_text()}")


@pytest.fixture
def work(tmp_path: Path) -> Path:
    (tmp_path / "dm_probe.py").write_text(PROBE)
    return tmp_path


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        (["/nb/python", "-m", "jupyterlab", "--port=1"], {}, True),
        (["/nb/python", "-m", "jupyterlab"], {"SOME_VAR": "x"}, True),
        (["/other/python", "-m", "jupyterlab"], {}, False),
        (["/nb/python", "-m", "jupyter_server"], {}, False),
        (["/nb/python", "/path/to/script.py"], {}, False),
        (["/nb/python", "-X", "dev", "-m", "jupyterlab"], {}, False),
        (["jupyter", "lab"], {}, False),
        (["/nb/python", "-m", "jupyterlab"], {"PYTHONPATH": "/x"}, False),
        (["/nb/python", "-m", "jupyterlab"], {"LD_PRELOAD": "/x.so"}, False),
        (["/nb/python"], {}, False),
        (["/nb/python", "-m", "jupyterlab"], {"TZ": "Asia/Shanghai"}, False),
        (["/nb/python", "-m", "jupyterlab"], {"LC_ALL": "C"}, False),
        (["/nb/python", "-m", "jupyterlab"], {"JUPYTER_ALLOW_INSECURE_WRITES": "1"}, False),
    ],
)
def test_only_the_notebook_interpreters_jupyterlab_is_forkable(
    argv: list[str], env: dict[str, str], expected: bool
) -> None:
    assert zygotes.forkable(argv, env, "/nb/python") is expected


def _folder(path: Path, mode: int, uid: int = 0) -> Path:
    path.mkdir()
    path.chmod(mode)
    os.chown(path, uid, -1)
    return path


@pytest.mark.skipif(os.geteuid() != 0, reason="the zygote checks its import paths as root")
def test_a_root_zygote_imports_only_from_folders_no_one_else_can_change(
    tmp_path: Path,
) -> None:
    safe = _folder(tmp_path / "safe", 0o755)
    sticky_lib = _folder(_folder(tmp_path / "sticky", 0o1777) / "lib", 0o755)
    open_lib = _folder(_folder(tmp_path / "open", 0o777) / "lib", 0o755)
    shared = _folder(tmp_path / "shared", 0o1777)
    theirs = _folder(tmp_path / "theirs", 0o755, uid=65534)
    link = _folder(tmp_path / "links", 0o777) / "lib"
    link.symlink_to(safe)
    # Under a root-owned sticky folder such as /tmp, others cannot replace root's folders.
    assert unsafe_paths([str(safe), str(sticky_lib)]) == []
    assert unsafe_paths([str(open_lib)]) == [f"{open_lib} ({open_lib.parent})"]
    assert unsafe_paths([str(shared)]) == [f"{shared} ({shared})"], "others add modules"
    assert unsafe_paths([str(theirs)]) == [f"{theirs} ({theirs})"]
    assert unsafe_paths([str(link)]) == [f"{link} ({link.parent})"], "the link is theirs"


async def test_forked_servers_share_nothing_set_after_the_fork(
    zygote: zygotes.Zygote, work: Path
) -> None:
    first = await _fork(zygote, work, "first")
    second = await _fork(zygote, work, "second")
    assert first and second and first != second
    a, b = await _output(work, "first"), await _output(work, "second")
    assert a["pid"] == first and b["pid"] == second
    assert a["sid"] == first, "a session of its own"
    assert a["argv"] == [str(work / "first.json")]
    assert a["cwd"] == str(work) and a["path0"] == str(work), "as `python -m` in the work dir"
    # The environment is the request's, whole, without the token (the launcher's file has it).
    assert a["env"]["PROBE_NAME"] == "first" and b["env"]["PROBE_NAME"] == "second"
    assert "JUPYTER_TOKEN" not in a["env"] and "JUPYTER_TOKEN" not in b["env"]
    assert set(a["env"]) == {"PATH", "PROBE_NAME"}
    # Only the standard streams (and the listing's own descriptor) are open.
    assert len(a["fds"]) == 4 and a["fds"][:3] == [0, 1, 2]
    assert a["random"] != b["random"]
    # A module changed in one server is untouched in the next: the zygote never ran it.
    assert a["mark_seen"] is None and b["mark_seen"] is None


async def test_the_token_reaches_only_the_instances_config_file(
    zygote: zygotes.Zygote, work: Path
) -> None:
    request = _request(work, "tok")
    token_file = work / "cfg" / "jupyter_server_config.json"
    request["launcher"] += ["--token-file", str(token_file)]
    log = os.open(work / "tok.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        assert await zygote.fork(request, log)
    finally:
        os.close(log)
    await _output(work, "tok")
    assert json.loads(token_file.read_text()) == {"IdentityProvider": {"token": "tok-tok"}}
    assert token_file.stat().st_mode & 0o777 == 0o600


async def test_a_child_that_cannot_confine_itself_is_reported_and_gone(
    zygote: zygotes.Zygote, work: Path
) -> None:
    request = _request(work, "bad")
    request["launcher"] = ["--cwd", str(work / "missing")]
    log = os.open(work / "bad.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        assert await zygote.fork(request, log) is None
    finally:
        os.close(log)
    assert "demanager zygote:" in (work / "bad.log").read_text()
    assert await _fork(zygote, work, "after"), "the zygote serves on"


async def test_a_dead_zygote_is_rebuilt_and_a_request_meanwhile_fails_over(
    zygote: zygotes.Zygote, work: Path
) -> None:
    assert await _fork(zygote, work, "before")
    old = zygote.pid
    assert old is not None
    os.kill(old, signal.SIGKILL)
    # Whatever the moment: no answer hangs, and None means "start it plainly".
    await asyncio.wait_for(_fork(zygote, work, "during"), zygotes.REPLY_SECONDS + 5)
    deadline = time.monotonic() + 30
    while zygote.pid in (None, old) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert zygote.pid not in (None, old) and zygote.deaths == 1
    assert await _fork(zygote, work, "after")
    assert (await _output(work, "after"))["env"]["PROBE_NAME"] == "after"


async def test_close_ends_the_zygote_but_not_its_servers(tmp_path: Path, work: Path) -> None:
    built = zygotes.Zygote(sys.executable, LAUNCHER, tmp_path / "z", preload=(),
                           extensions=False)
    pid = await _fork(built, work, "lasting", "30")
    assert pid
    await _output(work, "lasting")
    zygote_pid = built.pid
    await built.close()
    try:
        assert zygote_pid is not None
        with pytest.raises(ProcessLookupError):
            os.kill(zygote_pid, 0)
        os.kill(pid, 0)  # still running
    finally:
        os.kill(pid, signal.SIGKILL)


async def test_a_zygote_that_cannot_start_sends_every_start_the_plain_way_at_once(
    tmp_path: Path, work: Path
) -> None:
    broken = zygotes.Zygote(sys.executable, str(tmp_path / "no-launcher.py"), tmp_path / "z",
                            preload=(), extensions=False)
    try:
        began = time.monotonic()
        assert await _fork(broken, work, "never") is None
        assert time.monotonic() - began < zygotes.READY_WAIT_SECONDS / 2, "no long wait"
        assert await _fork(broken, work, "again") is None, "pausing: plain at once"
        assert "no-launcher.py" in (tmp_path / "z" / "zygote.log").read_text()
    finally:
        await broken.close()
