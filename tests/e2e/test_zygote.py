"""The notebook zygote end to end: real JupyterLab servers forked by it, through the API.

Which path started a server shows in its parent: the zygote (forked) or the demanager
server itself (plain).
"""

from __future__ import annotations

import ast
import json
import os
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import MINIMAL_BODY
from tests.e2e.jupyter import Notebook
from tests.server import ServerProcess, wait_for_status, wait_until

pytestmark = pytest.mark.slow

ZYGOTE_ON = {"DEMANAGER_PROCESS__ZYGOTE": "true", "DEMANAGER_INSTANCE_QUOTA": "100"}
ENV_PROBE = "import os\nsorted(os.environ.items())"


def _zygotes(server: ServerProcess) -> list[int]:
    assert server.proc is not None
    found = []
    for child in psutil.Process(server.proc.pid).children():
        try:
            if any(part.endswith("zygote.py") for part in child.cmdline()):
                found.append(child.pid)
        except psutil.Error:
            continue
    return found


def _server_pid(server: ServerProcess, instance_id: str) -> int:
    record = server.data_dir / "runtime" / instance_id / "server.json"
    return int(json.loads(record.read_text())["pid"])


def _parent(pid: int) -> int:
    return int(psutil.Process(pid).ppid())


def _create(server: ServerProcess, name: str) -> str:
    with server.client() as api:
        response = api.post("", json={**MINIMAL_BODY, "name": name})
        assert response.status_code == 200, response.text
        return str(response.json()["id"])


def _running(server: ServerProcess, instance_id: str) -> dict[str, Any]:
    with server.client() as api:
        return wait_for_status(api, instance_id, {"RUNNING", "CREATE_FAILED"}, timeout=300)


def _one_zygote(server: ServerProcess) -> int:
    wait_until(lambda: len(_zygotes(server)) == 1, "the zygote runs", timeout=60)
    return _zygotes(server)[0]


def test_twenty_concurrent_creates_all_reach_running(
    server_factory: Callable[..., ServerProcess],
) -> None:
    server = server_factory(backend="process", env=ZYGOTE_ON)
    with ThreadPoolExecutor(20) as pool:
        ids = list(pool.map(lambda n: _create(server, f"many-{n}"), range(20)))
        shown = list(pool.map(lambda i: _running(server, i), ids))
    assert [s["status"] for s in shown] == ["RUNNING"] * 20, shown
    zygote = _one_zygote(server)
    pids = [_server_pid(server, i) for i in ids]
    assert len(set(pids)) == 20
    assert all(_parent(pid) == zygote for pid in pids), "every server was forked"
    records = [
        json.loads((server.data_dir / "runtime" / i / "server.json").read_text()) for i in ids
    ]
    assert len({r["port"] for r in records}) == 20 and len({r["token"] for r in records}) == 20


def test_forked_servers_share_no_environment_or_descriptor(
    server_factory: Callable[..., ServerProcess],
) -> None:
    server = server_factory(backend="process", env=ZYGOTE_ON)
    ids = [_create(server, "left"), _create(server, "right")]
    shown = [_running(server, i) for i in ids]
    zygote = _one_zygote(server)
    pids = [_server_pid(server, i) for i in ids]
    assert [_parent(pid) for pid in pids] == [zygote, zygote]

    # The servers' environments, as their kernels inherit them: each names only itself.
    envs = []
    for instance in shown:
        with Notebook(instance["spec"]["annotations"]["url"], server.token) as notebook:
            envs.append(dict(ast.literal_eval(notebook.execute(ENV_PROBE))))
    for mine, other, env in ((ids[0], ids[1], envs[0]), (ids[1], ids[0], envs[1])):
        assert mine in env["JUPYTER_CONFIG_DIR"]
        assert not any(other in value for value in env.values()), "nothing of the other"
        assert not any(key.startswith("DEMANAGER_") for key in env)
        assert "JUPYTER_TOKEN" not in env
    assert envs[0]["USER"] != envs[1]["USER"], "a uid each"

    # Descriptors: nothing of the zygote's, of the other server's, or of the other's files.
    def targets(pid: int) -> set[str]:
        found = set()
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                found.add(os.readlink(fd))
            except OSError:
                continue
        return found

    zygote_sockets = {t for t in targets(zygote) if t.startswith("socket:")}
    left, right = targets(pids[0]), targets(pids[1])
    for mine, other, seen in ((ids[0], ids[1], left), (ids[1], ids[0], right)):
        assert not {t for t in seen if t.startswith("socket:")} & zygote_sockets
        assert not any(other in t for t in seen), f"{mine} holds a file of {other}"
    assert not {t for t in left if t.startswith("socket:")} & {
        t for t in right if t.startswith("socket:")
    }


def test_killing_the_zygote_mid_start_leaves_no_instance_stuck(
    server_factory: Callable[..., ServerProcess],
) -> None:
    server = server_factory(backend="process", env=ZYGOTE_ON)
    first = _create(server, "first")
    assert _running(server, first)["status"] == "RUNNING"
    old = _one_zygote(server)
    with ThreadPoolExecutor(4) as pool:
        ids = list(pool.map(lambda n: _create(server, f"during-{n}"), range(4)))
        os.kill(old, signal.SIGKILL)
        shown = list(pool.map(lambda i: _running(server, i), ids))
    assert [s["status"] for s in shown] == ["RUNNING"] * 4, shown
    wait_until(
        lambda: bool(_zygotes(server)) and _zygotes(server) != [old], "a new zygote", 60
    )
    new = _zygotes(server)[0]
    later = _create(server, "later")
    assert _running(server, later)["status"] == "RUNNING"
    wait_until(lambda: new in _zygotes(server), "the new zygote serves", 5)
    assert _parent(_server_pid(server, later)) == new, "forked by the rebuilt zygote"


def test_with_the_zygote_off_every_server_starts_plainly(
    server_factory: Callable[..., ServerProcess],
) -> None:
    server = server_factory(backend="process", env={"DEMANAGER_PROCESS__ZYGOTE": "false"})
    instance_id = _create(server, "plain")
    assert _running(server, instance_id)["status"] == "RUNNING"
    assert _zygotes(server) == []
    assert server.proc is not None
    assert _parent(_server_pid(server, instance_id)) == server.proc.pid
