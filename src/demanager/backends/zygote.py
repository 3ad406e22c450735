"""The notebook zygote: imports Jupyter once, then forks each new server from that state.

A plain start of a notebook server spends most of its time importing the same modules
(Jupyter Server, JupyterLab, Tornado, Jinja2, their extensions), on one core, again for
every instance. The zygote does it once: the server starts it (as itself, with the
notebook interpreter and an allow-listed environment) as

    python -I zygote.py --launcher PATH --control FD [--preload MODULE]...
        [--preload-extensions yes]

and it imports every ``--preload`` module (and with ``--preload-extensions``, the Jupyter
server extensions the interpreter's environment enables), then waits on its control
socket (``FD``, a ``SOCK_SEQPACKET`` socket the server holds the other end of). As root
it first refuses to import from any directory another user could write to: whatever it
imports runs as root. It never starts an event
loop, a thread or a socket of its own, and never reads a request: each message brings
two file descriptors, a socket private to that request and the instance's log, and the
zygote only forks. The child (``_Child``), not the zygote, reads the request, so no
instance's environment or token ever enters the zygote's memory, which every later
server inherits. The child:

1. starts a session of its own, puts back default signal handling, and sends its pid;
2. reads the request (the launcher's options, the environment, the argv), points its
   standard streams at the instance's log, and replaces its whole environment;
3. confines itself with the launcher's own code (``launch.py``'s ``prepare``: cgroups,
   CPU pinning, uid and groups, ``no_new_privs``, umask, working directory, the token
   file, the stale server files), exactly as a plain start does before its exec;
4. answers ``ok``, closes every file descriptor but 0, 1 and 2, reseeds ``random`` and
   runs the argv's ``-m`` module as ``__main__`` with the same ``sys.argv`` and
   ``sys.path`` a plain ``python -m`` start would have.

A failure before ``ok`` is one line to the log and to the request socket, then exit 126,
as the launcher does. The zygote exits when the server closes its end of the control
socket. Children are reaped by the kernel (``SIGCHLD`` ignored): the server watches
them by pid and start time, as it does plain starts it adopted.

Like ``launch.py``, everything here but the preloaded modules is the standard library:
it runs as root, and imports nothing of demanager.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import random
import runpy
import signal
import site
import socket
import stat
import sys
import threading
from types import ModuleType

READY = b"R"
"""What the zygote sends on the control socket once its modules are imported."""
REQUEST = b"F"
"""The one byte of a fork request; its two descriptors are the payload."""
MAX_REQUEST = 4 * 1024 * 1024


def load_launcher(path: str) -> ModuleType:
    """``launch.py`` as a module, by path: its directory must not join ``sys.path``, whose
    other modules' names (``jupyter``, ``node``…) would shadow installed ones."""
    spec = importlib.util.spec_from_file_location("demanager_launch", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load the launcher {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def unsafe_paths(paths: list[str] | None = None) -> list[str]:
    """The directories of ``sys.path`` (or ``paths``) that a user other than root could
    write to or replace, when running as root: importing from them would run their code
    as root.

    A directory on the path must be root's and writable by root alone. Above it, a
    directory others may write to is safe only when root owns it and it is sticky (as
    ``/tmp`` is): others may add entries there but not rename or replace root's.
    """
    if os.geteuid() != 0:
        return []
    unsafe = []
    for entry in sys.path if paths is None else paths:
        # The path as written too: a link on it lives in a directory that must be safe.
        for start in dict.fromkeys((os.path.realpath(entry), os.path.abspath(entry))):
            folder = _unsafe_folder(start)
            if folder is not None:
                unsafe.append(f"{entry} ({folder})")
                break
    return unsafe


def _unsafe_folder(path: str) -> str | None:
    """The first folder from ``path`` up that others could change, if any."""
    folder, on_path = path, True
    while True:
        try:
            info = os.stat(folder)
        except OSError:
            return None
        shared = bool(info.st_mode & 0o022)
        if info.st_uid != 0 or (shared and (on_path or not info.st_mode & stat.S_ISVTX)):
            return folder
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder, on_path = parent, False


def enabled_extensions() -> list[str]:
    """The Jupyter server extensions the environment's own config enables."""
    folder = os.path.join(sys.prefix, "etc", "jupyter", "jupyter_server_config.d")
    names: list[str] = []
    try:
        files = sorted(os.listdir(folder))
    except OSError:
        return names
    for name in files:
        if not name.endswith(".json"):
            continue
        try:
            with open(os.path.join(folder, name), encoding="utf-8") as handle:
                config = json.load(handle)
            enabled = config["ServerApp"]["jpserver_extensions"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if isinstance(enabled, dict):
            names += [module for module, on in enabled.items() if on is True]
    return names


def preload(modules: list[str]) -> list[str]:
    """Import each module; the ones that failed, with why (a plain start reports them)."""
    failed = []
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # an extension that cannot load here loads (or not) later
            failed.append(f"{name}: {type(exc).__name__}: {exc}")
    return failed


class _Child:
    """What a forked child does with its request: see the module's docstring."""

    def __init__(self, launcher: ModuleType, conn: socket.socket, log_fd: int) -> None:
        self.launcher = launcher
        self.conn = conn
        self.log_fd = log_fd

    def setup(self) -> list[str]:
        """Steps 1 to 4 up to the run: the argv to run, once confined."""
        os.setsid()
        for number in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1):
            signal.signal(number, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        self.conn.sendall(f"{os.getpid()}\n".encode())
        launch_args, env, argv = _read_request(self.conn)
        _standard_streams(self.log_fd)
        os.environ.clear()
        os.environ.update(env)
        options = self.launcher.parse([*launch_args, "--", *argv])
        self.launcher.prepare(options)
        return argv

    def answer(self, line: str) -> None:
        try:
            self.conn.sendall(line.encode() + b"\n")
        except OSError:
            pass  # the server gave up on this request; it kills what it cannot account for
        finally:
            self.conn.close()


def run_module(argv: list[str]) -> int:
    """Run ``python -m MODULE ARGS`` in this process, as that command would.

    ``sys.path`` gets what such a start puts first, the working directory, and the
    user's site directory under the new ``HOME`` (the zygote ran with ``-I``).
    """
    if len(argv) < 3 or argv[1] != "-m":
        raise ValueError("only `python -m MODULE …` runs in a zygote")
    module = argv[2]
    sys.argv = [argv[0], *argv[3:]]
    sys.path.insert(0, os.getcwd())
    site.ENABLE_USER_SITE = True
    site.USER_BASE = None
    site.USER_SITE = None
    user_site = site.getusersitepackages()
    if os.path.isdir(user_site):
        site.addsitedir(user_site)
    random.seed()
    if "asyncio" in sys.modules:
        # A fresh policy: no event loop an import might have made reaches the server.
        sys.modules["asyncio"].set_event_loop_policy(None)
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return 1
    return 0


def serve(control: socket.socket, launcher: ModuleType) -> list[str] | None:
    """Fork for each request until the server closes the control socket (None). In a
    forked child, return the confined child's argv to run."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the servers
    control.sendall(READY)
    while True:
        try:
            message, fds, _flags, _addr = socket.recv_fds(control, 16, 4)
        except OSError:
            return None
        if not message:
            return None
        if message != REQUEST or len(fds) != 2:
            for fd in fds:
                os.close(fd)
            continue
        request_fd, log_fd = fds
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid:
            os.close(request_fd)
            os.close(log_fd)
            continue
        control.close()
        child = _Child(launcher, socket.socket(fileno=request_fd), log_fd)
        try:
            argv = child.setup()
        except Exception as exc:
            print(f"demanager zygote: {exc}", file=sys.stderr, flush=True)
            child.answer(f"error {exc}")
            os._exit(126)
        child.answer("ok")
        _close_others()
        return argv


def _read_request(conn: socket.socket) -> tuple[list[str], dict[str, str], list[str]]:
    """The launcher's options, the environment and the argv, read until the server's end."""
    chunks = []
    size = 0
    while chunk := conn.recv(65536):
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_REQUEST:
            raise ValueError("request too large")
    request = json.loads(b"".join(chunks))
    launch_args, env, argv = request["launcher"], request["env"], request["argv"]
    if not (
        _strings(launch_args)
        and _strings(argv)
        and isinstance(env, dict)
        and _strings([*env.keys(), *env.values()])
    ):
        raise ValueError("malformed request")
    return launch_args, env, argv


def _strings(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _standard_streams(log_fd: int) -> None:
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)


def _close_others() -> None:
    """Close every descriptor above 2: nothing of the zygote's or the server's reaches
    the notebook server (``os.closerange`` would cost a syscall per possible number)."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:  # no /proc: every possible number, however slow
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))
        return
    for name in names:
        fd = int(name)
        if fd > 2:
            try:
                os.close(fd)
            except OSError:
                continue  # the descriptor of the listing itself, already closed


def main(args: list[str]) -> int:
    launcher_path = None
    control_fd = None
    modules = []
    extensions = False
    while args:
        flag = args.pop(0)
        if not args:
            print(f"demanager zygote: {flag} needs a value", file=sys.stderr)
            return 2
        if flag == "--launcher":
            launcher_path = args.pop(0)
        elif flag == "--control":
            control_fd = int(args.pop(0))
        elif flag == "--preload":
            modules.append(args.pop(0))
        elif flag == "--preload-extensions":
            extensions = args.pop(0) == "yes"
        else:
            print(f"demanager zygote: unknown option {flag}", file=sys.stderr)
            return 2
    if launcher_path is None or control_fd is None:
        print("demanager zygote: --launcher and --control are required", file=sys.stderr)
        return 2
    unsafe = unsafe_paths()
    if unsafe:
        print(f"demanager zygote: refusing to import as root from {unsafe}", file=sys.stderr)
        return 4
    launcher = load_launcher(launcher_path)
    for line in preload(modules + (enabled_extensions() if extensions else [])):
        print(f"demanager zygote: cannot preload {line}", file=sys.stderr, flush=True)
    if threading.active_count() > 1:
        # A fork copies only the calling thread: the others' locks could stay held forever.
        print("demanager zygote: a preloaded module started a thread", file=sys.stderr)
        return 3
    control = socket.socket(fileno=control_fd)
    argv = serve(control, launcher)
    if argv is None:
        return 0
    return run_module(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
