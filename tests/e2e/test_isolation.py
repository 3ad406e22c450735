"""What a hostile notebook of the process backend can reach, tried from inside real kernels.

The server runs as root (as in CI), so every instance runs under its own uid;
each check below is code a notebook could run, over the kernel WebSocket.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from demanager.backends import sandbox
from tests.conftest import MINIMAL_BODY
from tests.e2e.jupyter import Notebook
from tests.server import ServerProcess, processes_of, traversable_dir, wait_for_status, wait_until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.geteuid() != 0, reason="per-instance uids need the server to run as root"
    ),
]

BODY = {**MINIMAL_BODY, "name": "isolated"}

PROBE = """
import json, os
def attempt(path, listing=False):
    try:
        os.listdir(path) if listing else open(path, "rb").read(1)
        return "allowed"
    except PermissionError:
        return "PermissionError"
    except OSError as exc:
        return type(exc).__name__
json.dumps({
    "demanager_vars": sorted(k for k in os.environ if k.upper().startswith("DEMANAGER_")),
    "jupyter_token_in_env": "JUPYTER_TOKEN" in os.environ,
    "uid": os.getuid(),
    "database": attempt(%(database)r),
    "server_key": attempt(%(server_key)r),
    "own_server_json": attempt(%(own_server_json)r),
    "other_server_json": attempt(%(other_server_json)r),
    "runtime_dir": attempt(%(runtime)r, listing=True),
    "other_volume": attempt(%(other_volume)r, listing=True),
    "other_volume_file": attempt(%(other_volume)r + "/secret.txt"),
    "own_volume": attempt(os.getcwd(), listing=True),
})
"""

# Unset every tag, leave the session, fork twice: the grandchild belongs to no
# process tree of the instance and carries no environment at all.
ESCAPE = """
import os, subprocess, sys, time
pidfile = os.path.join(os.getcwd(), "escaped.pid")
script = (
    "import os, sys, time\\n"
    "if os.fork():\\n"
    "    os._exit(0)\\n"
    "os.setsid()\\n"
    "if os.fork():\\n"
    "    os._exit(0)\\n"
    "open(sys.argv[1] + '.tmp', 'w').write(str(os.getpid()))\\n"
    "os.replace(sys.argv[1] + '.tmp', sys.argv[1])\\n"
    "time.sleep(3600)\\n"
)
subprocess.Popen([sys.executable, "-c", script, pidfile], env={}, start_new_session=True,
                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
deadline = time.monotonic() + 30
while not os.path.exists(pidfile) and time.monotonic() < deadline:
    time.sleep(0.05)
int(open(pidfile).read())
"""


def test_a_notebook_reaches_nothing_of_the_server_or_other_instances(
    server_factory: Callable[..., ServerProcess],
) -> None:
    server = server_factory(backend="process")
    with server.client() as api:
        first, second = (api.post("", json={**BODY, "name": n}).json()["id"] for n in "ab")
        urls = {
            i: wait_for_status(api, i, "RUNNING")["spec"]["annotations"]["url"]
            for i in (first, second)
        }
        with Notebook(urls[second], server.token) as other:
            other.write("secret.txt", "only for the second instance")
            other_uid = _run(other, "import os; os.getuid()")

        runtime = server.data_dir / "runtime"
        with Notebook(urls[first], server.token) as notebook:
            seen = json.loads(
                ast.literal_eval(
                    notebook.execute(
                        PROBE
                        % {
                            "database": str(server.data_dir / "demanager.db"),
                            "server_key": str(server.data_dir / "server.key"),
                            "own_server_json": str(runtime / first / "server.json"),
                            "other_server_json": str(runtime / second / "server.json"),
                            "runtime": str(runtime),
                            "other_volume": str(server.data_dir / "volumes" / second),
                        }
                    )
                )
            )
        assert seen["demanager_vars"] == [], "no DEMANAGER_ variable reaches a kernel"
        assert seen["jupyter_token_in_env"] is False, "the Jupyter token is not in the kernel env"
        assert seen["uid"] != 0 and other_uid != 0, "kernels do not run as root"
        assert seen["uid"] != other_uid, "instances do not share a uid"
        # On PostgreSQL the database is no file here (and the notebook network is not
        # isolated by this backend: docs/security.md); the server key always is.
        on_sqlite = server.database.url is None
        for what in (
            *(("database",) if on_sqlite else ()),
            "server_key",
            "own_server_json",
            "other_server_json",
            "runtime_dir",
            "other_volume",
            "other_volume_file",
        ):
            assert seen[what] == "PermissionError", f"{what}: {seen[what]}"
        assert seen["own_volume"] == "allowed"
        if on_sqlite:
            assert (server.data_dir / "demanager.db").stat().st_mode & 0o777 == 0o600
        assert (runtime / first / "server.json").stat().st_mode & 0o777 == 0o600
        assert (server.data_dir / "volumes" / first).stat().st_uid == seen["uid"]

        for instance_id in (first, second):
            api.post(f"/{instance_id}/action", json={"action": "stop"})
            wait_for_status(api, instance_id, "STOPPED")
            api.delete(f"/{instance_id}")


def test_stop_kills_a_process_that_dropped_its_tags_and_double_forked(
    server_factory: Callable[..., ServerProcess],
) -> None:
    server = server_factory(backend="process")
    with server.client() as api:
        instance_id = api.post("", json=BODY).json()["id"]
        url = wait_for_status(api, instance_id, "RUNNING")["spec"]["annotations"]["url"]
        with Notebook(url, server.token) as notebook:
            pid = _run(notebook, ESCAPE)
        assert _alive(pid), "the escaped process runs before the stop"
        assert pid in processes_of(instance_id), "it is still counted as the instance's"

        api.post(f"/{instance_id}/action", json={"action": "stop"})
        wait_for_status(api, instance_id, "STOPPED")
        wait_until(lambda: not _alive(pid), f"pid {pid} is gone after stop")
        assert processes_of(instance_id) == []
        _delete(api, instance_id)


def test_instances_share_an_object_storage_folder_and_nothing_else(
    server_factory: Callable[..., ServerProcess],
) -> None:
    """Buckets are shared storage within a project: two instances (two uids) both read and
    write one. Another project naming the same bucket gets a folder of its own and cannot
    reach the first project's."""
    object_root = traversable_dir("demanager-obs-")
    server = server_factory(
        backend="process", env={"DEMANAGER_OBJECT_STORAGE_ROOT": str(object_root)}
    )
    other_project = f"other-{server.project[:8]}"
    try:
        storage = {"type": "obs", "location": {"path": "/bucket-a/shared/"}}
        body = {**BODY, "spec": {"storage": storage}}
        with server.client() as api, server.client(project=other_project) as other_api:
            first, second = (api.post("", json={**body, "name": n}).json()["id"] for n in "ab")
            third = other_api.post("", json={**body, "name": "c"}).json()["id"]
            urls = {
                i: wait_for_status(api, i, "RUNNING")["spec"]["annotations"]["url"]
                for i in (first, second)
            }
            urls[third] = wait_for_status(other_api, third, "RUNNING")["spec"]["annotations"][
                "url"]
            folder = object_root / server.project / "bucket-a" / "shared"
            with Notebook(urls[first], server.token) as a, \
                    Notebook(urls[second], server.token) as b, \
                    Notebook(urls[third], server.token) as c:
                a.write("from-a.txt", "written by a")
                assert b.read("from-a.txt") == "written by a"
                b.write("from-a.txt", "changed by b")
                assert a.read("from-a.txt") == "changed by b"
                assert _run(a, "import os; os.getuid()") != _run(b, "import os; os.getuid()")
                # The other project's "bucket-a" is another folder, and this one is shut.
                assert c.http.get("api/contents/from-a.txt").status_code == 404
                probe = _TRY_READ.format(path=str(folder / "from-a.txt"))
                assert _run(c, probe) == "PermissionError"
            assert folder.stat().st_mode & 0o7777 == 0o2770
            assert (object_root / other_project / "bucket-a" / "shared").is_dir()
            for client, instance_id in ((api, first), (api, second), (other_api, third)):
                client.post(f"/{instance_id}/action", json={"action": "stop"})
                wait_for_status(client, instance_id, "STOPPED")
                _delete(client, instance_id)
            assert (folder / "from-a.txt").read_text() == "changed by b", "delete keeps buckets"
    finally:
        shutil.rmtree(object_root, ignore_errors=True)
        for project in (server.project, other_project):
            # Project groups outlive instances on purpose; these test projects are done.
            subprocess.run(["groupdel", sandbox.project_group(project)], check=False,
                           capture_output=True)


_TRY_READ = """
try:
    open({path!r}).read()
    result = "read"
except Exception as exc:
    result = type(exc).__name__
result
"""


def _run(notebook: Notebook, code: str) -> Any:
    return ast.literal_eval(notebook.execute(code))


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper is dead already)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _delete(api: httpx.Client, instance_id: str) -> None:
    assert api.delete(f"/{instance_id}").status_code == 200


