"""The process backend's side of the notebook zygote (``zygote.py``): start it, watch it,
rebuild it, and ask it for servers.

One zygote serves the notebook interpreter (``DEMANAGER_PROCESS__NOTEBOOK_PYTHON``):
every profile whose command is that interpreter running ``-m jupyterlab`` (all of the
default catalog's) is forked from it. Any other command, and any profile that sets a
variable read only when an interpreter starts (``PYTHON*``, ``LD_*``), starts plainly:
a zygote runs as root, so it runs no interpreter but the one the operator named.

A fork answers with the new server's pid, once the child has confined itself exactly as
the launcher would; anything else (the zygote is dead or still importing past
``READY_WAIT_SECONDS``, the child failed or went silent) answers None, and the caller
starts the server plainly: no request is left waiting on a zygote. A zygote that dies is
rebuilt at once, and after a quick death again only after a growing pause, so a zygote
that cannot live costs plain starts, never a loop of failed ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from demanager.backends import sandbox
from demanager.backends.node import start_ticks

log = logging.getLogger(__name__)

PROGRAM = str(Path(__file__).with_name("zygote.py"))
MODULES = frozenset({"jupyterlab"})
"""The ``-m`` modules a zygote runs: those it preloads."""
PRELOAD = ("jupyterlab.labapp",)
STARTUP_PREFIXES = (
    "PYTHON", "LD_", "LANG", "LC_", "TZ",
    # Read when the preloaded modules are imported (a search of them for module-level
    # reads of the environment), so a forked server would keep the zygote's value.
    "TRAITLETS_", "JUPYTER_ALLOW_INSECURE_WRITES", "GATEWAY_WS_PING_INTERVAL_SECS",
    "JUPYTER_LSP_BUILDING_DOCS",
)
"""Variables read when an interpreter (or its loader, or an import of the zygote) starts:
a forked server started long before, so a profile setting one starts plainly."""
READY_WAIT_SECONDS = 30.0
"""How long a start waits for a zygote still importing before starting plainly."""
REPLY_SECONDS = 15.0
"""How long a forked child may take to confine itself and say so."""
RESTART_PAUSE = (0.5, 30.0)
"""The first and the longest pause before rebuilding a zygote that died young."""
YOUNG_SECONDS = 60.0
READY = b"R"
REQUEST = b"F"


def forkable(argv: Sequence[str], profile_env: Mapping[str, str], python: str) -> bool:
    """Whether a zygote of ``python`` can run ``argv`` (a profile's command, expanded)."""
    return (
        len(argv) >= 3
        and argv[0] == python
        and argv[1] == "-m"
        and argv[2] in MODULES
        and not any(key.upper().startswith(STARTUP_PREFIXES) for key in profile_env)
    )


class Zygote:
    """One zygote process of ``python`` and its supervision (``run``, a task)."""

    def __init__(
        self,
        python: str,
        launcher: str,
        folder: Path,
        *,
        preload: Sequence[str] = PRELOAD,
        extensions: bool = True,
    ) -> None:
        """``preload``: the modules to import (``extensions``: and the server extensions
        the interpreter's environment enables); the log goes to ``folder``."""
        self.python = python
        self._launcher = launcher
        self._preload = tuple(preload)
        self._extensions = extensions
        self.log_path = folder / "zygote.log"
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        folder.chmod(0o700)
        self.pid: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._control: socket.socket | None = None
        self._ready = asyncio.Event()
        self._changed = asyncio.Event()
        """Set (and replaced) whenever the zygote gets ready or ends: wakes waiting starts."""
        self._booting = False
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self.deaths = 0

    def ensure_started(self) -> None:
        if self._task is None and not self._closing:
            self._booting = True  # requests from now on wait for it
            self._task = asyncio.get_running_loop().create_task(self._supervise())

    async def fork(self, request: Mapping[str, object], log_fd: int) -> int | None:
        """Fork a server for ``request`` (``launcher``: the launcher's options, ``env``,
        ``argv``) with ``log_fd`` as its output; its pid, or None: start it plainly."""
        self.ensure_started()
        deadline = time.monotonic() + READY_WAIT_SECONDS
        while not self._ready.is_set():
            left = deadline - time.monotonic()
            if not self._booting or left <= 0:
                return None  # dead, pausing before a rebuild, or too slow: start plainly
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)
        control = self._control
        if control is None:
            return None
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with mine:
            try:
                await _send_fds(control, [theirs.fileno(), log_fd])
            except OSError as exc:
                log.warning("the notebook zygote did not take a request: %s", exc)
                return None
            finally:
                theirs.close()
            mine.setblocking(False)
            return await self._converse(mine, request)

    async def _converse(self, conn: socket.socket, request: Mapping[str, object]) -> int | None:
        loop = asyncio.get_running_loop()
        pid: int | None = None
        ticks: int | None = None
        try:
            async with asyncio.timeout(REPLY_SECONDS):
                reader = _Lines(conn)
                pid = int(await reader.line())
                ticks = start_ticks(pid)
                await loop.sock_sendall(conn, json.dumps(request).encode())
                conn.shutdown(socket.SHUT_WR)
                answer = await reader.line()
        except (TimeoutError, OSError, ValueError) as exc:
            answer = f"error {type(exc).__name__} {exc}".strip()
        if answer == "ok" and pid is not None:
            return pid
        log.warning("a forked notebook server failed (%s); starting it plainly", answer)
        if pid is not None and ticks is not None and start_ticks(pid) == ticks:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)  # stuck or failing: never two servers
        return None

    async def _supervise(self) -> None:
        pause = RESTART_PAUSE[0]
        while not self._closing:
            began = time.monotonic()
            try:
                await self._run_one()
            except OSError as exc:
                log.error("cannot start the notebook zygote: %s", exc)
            if self._closing:
                return
            self.deaths += 1
            pause = RESTART_PAUSE[0] if time.monotonic() - began > YOUNG_SECONDS else pause
            log.warning("the notebook zygote ended; rebuilding it in %.1fs", pause)
            await asyncio.sleep(pause)
            pause = min(pause * 2, RESTART_PAUSE[1])

    async def _run_one(self) -> None:
        """Start a zygote and return once it has ended."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = sandbox.notebook_env(
            os.environ, python=self.python, home=Path("/nonexistent"), extra={},
            backend_vars={},
        )
        argv = [self.python, "-I", PROGRAM, "--launcher", self._launcher]
        argv += ["--control", str(theirs.fileno())]
        for module in self._preload:
            argv += ["--preload", module]
        argv += ["--preload-extensions", "yes" if self._extensions else "no"]
        self._booting = True
        try:
            with theirs:
                self._proc = self._spawn(argv, env, theirs.fileno())
            self.pid = self._proc.pid
            self._control = ours
            ours.setblocking(False)
            loop = asyncio.get_running_loop()
            while message := await loop.sock_recv(ours, 16):
                if message == READY:
                    self._ready.set()
                    self._booting = False
                    self._notify()
                    log.info("notebook zygote %d is ready", self.pid)
        finally:
            self._booting = False
            self._ready.clear()
            self._control = None
            self._notify()
            ours.close()
            await self._reap()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _spawn(self, argv: list[str], env: dict[str, str], control: int) -> subprocess.Popen[bytes]:
        with open(self.log_path, "ab") as out:
            return subprocess.Popen(
                argv,
                cwd="/",
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                pass_fds=(control,),
            )

    async def _reap(self) -> None:
        proc, self._proc, self.pid = self._proc, None, None
        if proc is None:
            return
        # Its control socket is closed, so it exits by itself; it serves nobody either way.
        try:
            code = await asyncio.to_thread(proc.wait, 2.0)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            code = await asyncio.to_thread(proc.wait)
        if not self._closing:
            log.warning("notebook zygote %d exited (%s)", proc.pid, code)

    async def close(self) -> None:
        """End the zygote (never its servers: each is a session of its own)."""
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._reap()


class _Lines:
    """Newline-ended lines from a non-blocking socket."""

    def __init__(self, conn: socket.socket) -> None:
        self._conn = conn
        self._buffer = b""

    async def line(self) -> str:
        loop = asyncio.get_running_loop()
        while b"\n" not in self._buffer:
            chunk = await loop.sock_recv(self._conn, 4096)
            if not chunk:
                raise ValueError("closed without an answer")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode(errors="replace")


async def _send_fds(control: socket.socket, fds: list[int]) -> None:
    """One request on the (non-blocking) control socket; waits while its queue is full."""
    delay = 0.001
    deadline = time.monotonic() + REPLY_SECONDS
    while True:
        try:
            socket.send_fds(control, [REQUEST], fds)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
