"""A real ``demanager serve`` child process for tests and benchmarks.

Every server gets its own data dir and, when ``DEMANAGER_TEST_POSTGRES_URL``
names a PostgreSQL server (an admin URL such as
``postgresql://postgres@127.0.0.1:5432/postgres``), its own fresh database there;
otherwise it uses the embedded SQLite default.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

DEMANAGER = str(Path(sys.executable).with_name("demanager"))
OPERATOR_TOKEN = "dmo_test-operator-token"
NOTEBOOK_ENV_PYTHON = Path("/opt/demanager/notebook-env/bin/python")
"""What ``make notebook-env`` builds: as root, instances' uids cannot run this venv."""
FALLBACK_TAG = "NOTEBOOK_INSTANCE_TAG"
"""The process backend's environment tag when the host has no writable cgroup."""


def notebook_python() -> Path | None:
    """The notebook interpreter a process backend built in a test should use: the one the
    environment names, else (as root) the world-readable notebook environment."""
    named = os.environ.get("DEMANAGER_PROCESS__NOTEBOOK_PYTHON")
    if named:
        return Path(named)
    return Path(python) if (python := notebook_python_env().get(
        "DEMANAGER_PROCESS__NOTEBOOK_PYTHON")) else None


def zygote_setting() -> bool:
    """Whether process backends that tests build directly fork from the notebook zygote:
    as servers do, ``DEMANAGER_PROCESS__ZYGOTE`` (default on), so that one variable
    switches the whole suite between the forked and the plain path."""
    value = os.environ.get("DEMANAGER_PROCESS__ZYGOTE", "true").strip().lower()
    return value not in ("false", "0", "no", "off")


def notebook_python_env() -> dict[str, str]:
    """As root, point the process backend at the world-readable notebook environment."""
    if "DEMANAGER_PROCESS__NOTEBOOK_PYTHON" in os.environ or os.geteuid() != 0:
        return {}
    if NOTEBOOK_ENV_PYTHON.exists():
        return {"DEMANAGER_PROCESS__NOTEBOOK_PYTHON": str(NOTEBOOK_ENV_PYTHON)}
    return {}


TEST_HOST = {
    "DEMANAGER_PROCESS__CPUS": "1024",
    "DEMANAGER_PROCESS__MEMORY": "64TiB",
    "DEMANAGER_GPUS": ",".join(f"test-gpu-{n}" for n in range(64)),
}
"""A host declared big enough for every flavor of the default catalog, many times over,
for process-backend servers of tests that are not about host fit: tests create 8-CPU,
64 GiB and GPU flavors on small machines. Declared GPUs need not exist: the notebook
only gets their ids in ``CUDA_VISIBLE_DEVICES``. Tests of host fit pass their own."""


def _die_with_parent() -> None:
    """Linux: the server gets SIGTERM if the test process dies, so none is left behind."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TestDatabase:
    """A throw-away PostgreSQL database, or nothing (SQLite) when no server is configured."""

    __test__ = False  # not a test class, whatever its name says

    def __init__(self) -> None:
        self.admin_url = os.environ.get("DEMANAGER_TEST_POSTGRES_URL")
        self.name = f"dm_{uuid.uuid4().hex[:12]}"
        self.url: str | None = None
        if self.admin_url:
            self._execute(f'CREATE DATABASE "{self.name}"')
            base = self.admin_url.rsplit("/", 1)[0]
            self.url = f"{base.replace('postgresql://', 'postgresql+asyncpg://', 1)}/{self.name}"

    def _execute(self, sql: str) -> None:
        import psycopg

        assert self.admin_url
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    def drop(self) -> None:
        if self.admin_url:
            self._execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


@contextlib.asynccontextmanager
async def migrated_database(folder: Path) -> AsyncIterator[tuple[str, AsyncEngine]]:
    """A fresh database at the newest revision, as its URL and an engine: PostgreSQL when
    ``DEMANAGER_TEST_POSTGRES_URL`` is set, else SQLite in ``folder``; dropped after."""
    import asyncio

    from demanager.store.database import make_engine, upgrade

    db = await asyncio.to_thread(TestDatabase)
    url = db.url or f"sqlite+aiosqlite:///{folder / 'demanager.db'}"
    try:
        await asyncio.to_thread(upgrade, url)
        engine = make_engine(url)
        try:
            yield url, engine
        finally:
            await engine.dispose()
    finally:
        await asyncio.to_thread(db.drop)


class ServerProcess:
    def __init__(
        self,
        data_dir: Path,
        *,
        backend: str = "fake",
        env: Mapping[str, str] | None = None,
        database: TestDatabase | None = None,
    ) -> None:
        """``database``: one several servers share (replicas), which ``close`` leaves for
        its creator to drop; default: a fresh one of this server's own. Replicas also
        need one ``DEMANAGER_SECRET_KEY`` in ``env``."""
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = OPERATOR_TOKEN
        self.project = uuid.uuid4().hex
        self._owns_database = database is None
        self.database = database or TestDatabase()
        self.log_path = data_dir / "server.log"
        self.env = {
            **os.environ,
            "DEMANAGER_BOOTSTRAP_TOKEN": OPERATOR_TOKEN,
            "DEMANAGER_BACKEND": backend,
            "DEMANAGER_DATA_DIR": str(data_dir),
            "DEMANAGER_RECONCILE_INTERVAL_SECONDS": "0.5",
            **notebook_python_env(),
            **(TEST_HOST if backend == "process" else {}),
            **({"DEMANAGER_DATABASE_URL": self.database.url} if self.database.url else {}),
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    # --- process control ---------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> ServerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [DEMANAGER, "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"demanager exited early:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(f"{self.url}/openapi.json", timeout=1.0)
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"demanager did not answer within {timeout}s:\n{self.log()}")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """Crash the server: SIGKILL, no chance to clean up."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        self.proc = None

    def close(self) -> None:
        """Stop the server, end every workload it left (a failed test may leave some),
        and drop its database unless it was given a shared one."""
        self.stop()
        runtime = self.data_dir / "runtime"
        if runtime.is_dir():
            for entry in runtime.iterdir():
                for pid in processes_of(entry.name):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                deadline = time.monotonic() + 10
                while processes_of(entry.name) and time.monotonic() < deadline:
                    time.sleep(0.05)
                _forget_instance(entry.name)
        if self._owns_database:
            self.database.drop()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-5000:]
        except OSError:
            return ""

    # --- talking to it -----------------------------------------------------------------

    def client(self, token: str | None = None, project: str | None = None) -> httpx.Client:
        """An httpx client whose base URL is ``/v1/{project}/demanager/instances``."""
        headers = {} if token == "" else {"X-Auth-Token": token or self.token}
        return httpx.Client(
            base_url=f"{self.url}/v1/{project or self.project}/demanager/instances",
            headers=headers,
            timeout=30.0,
        )

    def make_token(self, project: str, user: str, *extra: str) -> str:
        out = subprocess.run(
            [DEMANAGER, "tokens", "create", "--project", project, "--user", user, *extra],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        return out.stdout.strip().splitlines()[-1]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [DEMANAGER, *args], env=self.env, capture_output=True, text=True, timeout=60
        )


def wait_for_status(
    client: httpx.Client, instance_id: str, statuses: set[str] | str, timeout: float = 120.0
) -> dict[str, Any]:
    """Poll GET until the instance is in one of ``statuses`` (or fail with its last view)."""
    wanted = {statuses} if isinstance(statuses, str) else statuses
    deadline = time.monotonic() + timeout
    delay = 0.05
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = client.get(f"/{instance_id}")
        body = response.json()
        if body.get("status") in wanted:
            return body
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)
    raise AssertionError(f"{instance_id} never reached {wanted}; last: {body}")


def processes_of(instance_id: str) -> list[int]:
    """PIDs of every process of the instance: those in its cgroup (``…/demanager/{id}``),
    or, on a host without cgroups, those carrying the backend's environment tag."""
    group = f"/demanager/{instance_id}\n".encode()
    tag = f"{FALLBACK_TAG}={instance_id}\0".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if group in (entry / "cgroup").read_bytes() or tag in (
                (entry / "environ").read_bytes() + b"\0"
            ):
                found.append(int(entry.name))
    return found


def _forget_instance(instance_id: str) -> None:
    """Best effort after a failed test: remove the instance's cgroups and its user."""
    root = Path("/sys/fs/cgroup")
    for group in [root / "demanager" / instance_id, *root.glob(f"*/demanager/{instance_id}")]:
        with contextlib.suppress(OSError):
            group.rmdir()
    if os.geteuid() == 0:
        import pwd

        for entry in pwd.getpwall():
            if entry.pw_gecos == f"demanager instance {instance_id}":
                subprocess.run(["userdel", entry.pw_name], capture_output=True, check=False)


def traversable_dir(prefix: str) -> Path:
    """A fresh directory every user may traverse (not list): instance uids must reach
    their volumes in data dirs below it, which pytest's 0700 tmp dirs forbid."""
    import tempfile

    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o711)
    return path


@contextlib.contextmanager
def running_server(data_dir: Path, **kwargs: Any) -> Iterator[ServerProcess]:
    server = ServerProcess(data_dir, **kwargs).start()
    try:
        yield server
    finally:
        server.close()


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll ``predicate`` until it holds, or fail naming ``what`` was awaited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting until {what}")
