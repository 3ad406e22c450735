"""What a server loads: libraries that only some deployments use are imported when one
is first used, so the control plane of every other deployment does not carry them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psutil

from demanager.cli.server import server_environment
from tests.server import ServerProcess

SERVER_MODULES = (
    "demanager.cli.main", "demanager.api.app", "demanager.engine.runtime",
    "demanager.backends.process", "demanager.backends.fake", "demanager.backends.objectmounts",
    "demanager.engine.buckets", "demanager.objectstore.sync", "demanager.engine.health",
    "demanager.store.database",
)


SERVING = ("demanager.cli.serving", *SERVER_MODULES[1:])
"""What the server process itself imports: ``serve`` execs ``demanager.cli.serving``."""


def _loaded_after(imports: str) -> set[str]:
    report = "print(' '.join({m.split('.')[0] for m in sys.modules}))"
    done = subprocess.run(
        [sys.executable, "-c", f"import sys\n{imports}\n{report}"],
        capture_output=True, text=True, timeout=60, check=True,
    )
    return set(done.stdout.split())


def test_a_server_without_object_storage_never_loads_boto3() -> None:
    loaded = _loaded_after("\n".join(f"import {m}" for m in SERVER_MODULES))
    assert "demanager" in loaded
    assert not {"boto3", "botocore", "s3transfer"} & loaded


def test_the_first_bucket_client_loads_boto3() -> None:
    loaded = _loaded_after(
        "from demanager.objectstore.options import S3Options\n"
        "from demanager.objectstore.stores import StoreCache\n"
        "StoreCache().get(S3Options(endpoint_url='http://127.0.0.1:9', access_key_id='a',"
        " secret_access_key='s'))"
    )
    assert {"boto3", "botocore"} <= loaded


def test_a_server_never_loads_alembic() -> None:
    """It reads the schema's revision itself; a child interpreter migrates."""
    assert "alembic" not in _loaded_after("\n".join(f"import {m}" for m in SERVER_MODULES))


def test_the_server_process_holds_neither_the_command_line_nor_unused_clients() -> None:
    """Typer is the command line's; aiohttp is loaded by the first proxied request,
    cryptography by the first project key stored or read, argon2 by the first password."""
    loaded = _loaded_after("\n".join(f"import {m}" for m in SERVING))
    assert "demanager" in loaded
    assert not {"typer", "aiohttp", "cryptography", "argon2"} & loaded


def test_the_first_password_loads_argon2() -> None:
    loaded = _loaded_after("from demanager.identity.secrets import hash_password, verify_password\n"
                           "assert verify_password(hash_password('pw'), 'pw')\n"
                           "assert not verify_password(None, 'pw')")
    assert "argon2" in loaded


def test_the_server_gets_two_malloc_arenas_unless_the_operator_chose() -> None:
    assert server_environment({"PATH": "/bin"}) == {"PATH": "/bin", "MALLOC_ARENA_MAX": "2"}
    assert server_environment({"MALLOC_ARENA_MAX": "8"})["MALLOC_ARENA_MAX"] == "8"


def test_the_server_process_leaves_out_httpx_s_command_line() -> None:
    """``import httpx`` would import Rich, Pygments and Click for its ``httpx`` command."""
    skip = "import demanager.cli.serving as s\ns.skip_httpx_command_line()\n"
    assert {"rich", "pygments"} <= _loaded_after("import httpx")
    loaded = _loaded_after(skip + "\n".join(f"import {m}" for m in SERVING) + "\nimport httpx")
    assert "httpx" in loaded
    assert not {"rich", "pygments"} & loaded


def test_serve_replaces_itself_with_the_server(tmp_path: Path) -> None:
    """Same PID (whatever started ``serve`` still holds the server), another program."""
    server = ServerProcess(tmp_path, backend="fake").start()
    try:
        assert server.proc is not None
        process = psutil.Process(server.proc.pid)
        assert process.cmdline()[1:4] == ["-P", "-m", "demanager.cli.serving"]
        assert process.environ()["MALLOC_ARENA_MAX"] == "2"
        mapped = {Path(m.path).name for m in process.memory_maps()}
        assert not [name for name in mapped if name.startswith("_rust.")], "cryptography"
        assert not [name for name in mapped if name.startswith("_http_parser.")], "aiohttp"
        with server.client() as api:  # and it serves
            assert api.get("", params={"de_type": "Notebook"}).status_code == 200
    finally:
        server.close()
