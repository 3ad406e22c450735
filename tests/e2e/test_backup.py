"""A backup taken while notebooks run, the database lost, a restore and a restart: the
server adopts the running notebooks, as after a crash.

On SQLite with ``demanager backup`` and ``restore``; on PostgreSQL with the
``pg_dump``/``pg_restore`` commands docs/operations.md gives, after checking that
``demanager backup`` points there.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.jupyter import Notebook
from tests.e2e.test_crash import _body, _direct_status, _server_pid
from tests.server import ServerProcess, processes_of, wait_for_status, wait_until

pytestmark = pytest.mark.slow


def _libpq_url(server: ServerProcess) -> str:
    assert server.database.url is not None
    return server.database.url.replace("+asyncpg", "", 1)


def _backup(server: ServerProcess, dest: Path) -> None:
    done = server.cli("backup", str(dest))
    if server.database.url is None:
        assert done.returncode == 0, done.stderr
        return
    assert done.returncode == 2 and "pg_dump" in done.stderr
    dest.mkdir(mode=0o700)
    subprocess.run(["pg_dump", "--format=custom", f"--file={dest / 'demanager.dump'}",
                    _libpq_url(server)], check=True, timeout=120)
    shutil.copy2(server.data_dir / "server.key", dest / "server.key")


def _lose_the_database(server: ServerProcess) -> None:
    (server.data_dir / "server.key").unlink()
    if server.database.url is None:
        for suffix in ("", "-wal", "-shm"):
            (server.data_dir / f"demanager.db{suffix}").unlink(missing_ok=True)
        return
    import psycopg

    with psycopg.connect(_libpq_url(server), autocommit=True) as connection:
        connection.execute("DROP SCHEMA public CASCADE")
        connection.execute("CREATE SCHEMA public")


def _restore(server: ServerProcess, src: Path) -> None:
    if server.database.url is None:
        done = server.cli("restore", str(src))
        assert done.returncode == 0, done.stderr
        return
    subprocess.run(["pg_restore", "--clean", "--if-exists", "--no-owner",
                    f"--dbname={_libpq_url(server)}", str(src / "demanager.dump")],
                   check=True, timeout=120)
    shutil.copy2(src / "server.key", server.data_dir / "server.key")
    upgraded = server.cli("db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr


def test_restore_and_restart_adopt_the_running_notebooks(
    server_factory: Callable[..., ServerProcess],
) -> None:
    server = server_factory(backend="process")
    alice = server.make_token(server.project, "alice")
    with server.client() as api, server.client(alice) as own:
        every = [api.post("", json=_body("operators")).json()["id"],
                 own.post("", json=_body("alices")).json()["id"]]
        before = {i: wait_for_status(api, i, "RUNNING") for i in every}
        pids = {i: _server_pid(server, i) for i in every}
        with Notebook(before[every[0]]["spec"]["annotations"]["url"], server.token) as nb:
            started = nb.started()

        _backup(server, server.data_dir.parent / "backup")
        # Written after the backup, so lost with the database.
        assert api.put(f"/{every[0]}", json={"description": "after"}).status_code == 200

    server.stop()
    assert all(_direct_status(server, i) == 200 for i in every), "notebooks outlive the server"
    _lose_the_database(server)
    _restore(server, server.data_dir.parent / "backup")
    server.start()

    with server.client() as api, server.client(alice) as own:
        # Alice's token is checked with the restored server key.
        assert [i["id"] for i in own.get("", params={"de_type": "Notebook"}).json()[
            "instances"]] == [every[1]]
        assert api.get(f"/{every[0]}").json()["description"] == ""
        after = {i: wait_for_status(api, i, "RUNNING") for i in every}
        for instance_id in every:
            assert _server_pid(server, instance_id) == pids[instance_id], "adopted, not relaunched"
            assert pids[instance_id] in processes_of(instance_id)
        with Notebook(after[every[0]]["spec"]["annotations"]["url"], server.token) as nb:
            assert nb.started() == started

        for instance_id in every:
            api.post(f"/{instance_id}/action", json={"action": "stop"})
        for instance_id in every:
            wait_for_status(api, instance_id, "STOPPED")
            assert api.delete(f"/{instance_id}").status_code == 200
    wait_until(lambda: not any(processes_of(i) for i in every), "every notebook has ended")
