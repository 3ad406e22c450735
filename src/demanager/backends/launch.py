"""The first program of every process-backend workload: confine, then exec Jupyter.

The server starts it (as itself, with the notebook's allow-listed environment)
as ``python -I -S launch.py OPTIONS -- COMMAND…``; it

1. joins the instance's cgroup(s), before anything of the workload runs (the
   tracking group, and the cpu and memory groups that carry the flavor's limits),
   and where no cpu controller can limit it, pins it to the flavor's number of
   CPUs (``--cpu``, once per CPU);
2. drops to the instance's uid and gid with no supplementary groups beyond
   those given, and sets ``no_new_privs`` so no set-uid program gives them back;
3. writes the Jupyter token from ``JUPYTER_TOKEN`` into a config file only
   that uid can read, and removes it from the environment, so kernels (which
   inherit the server's environment) never see it;
4. removes the ``jpserver-*`` files a previous server of the instance left in
   ``JUPYTER_RUNTIME_DIR`` (a crashed one never does it): no server of the
   instance runs now, so every one of them is stale;
5. execs COMMAND in the work directory (same pid: the handle's pid stays right).

It runs as root before step 2, so it imports nothing but the standard library,
runs isolated (``-I``: no ``PYTHON*`` variables, no current directory on the
path) and does every file operation of the workload only after dropping.
A failure exits 126 with one line on stderr (the instance's server.log).
"""

from __future__ import annotations

import ctypes
import glob
import json
import os
import sys

PR_SET_NO_NEW_PRIVS = 38


class Options:
    def __init__(self) -> None:
        self.cgroups: list[str] = []
        self.uid: int | None = None
        self.gid: int | None = None
        self.groups: list[int] = []
        self.cpus: list[int] = []
        self.cwd = "/"
        self.token_file: str | None = None
        self.command: list[str] = []


def parse(argv: list[str]) -> Options:
    options = Options()
    args = list(argv)
    while args:
        flag = args.pop(0)
        if flag == "--":
            options.command = args
            break
        if not args:
            raise ValueError(f"{flag} needs a value")
        value = args.pop(0)
        if flag == "--cgroup":
            options.cgroups.append(value)
        elif flag == "--uid":
            options.uid = int(value)
        elif flag == "--gid":
            options.gid = int(value)
        elif flag == "--group":
            options.groups.append(int(value))
        elif flag == "--cpu":
            options.cpus.append(int(value))
        elif flag == "--cwd":
            options.cwd = value
        elif flag == "--token-file":
            options.token_file = value
        else:
            raise ValueError(f"unknown option {flag}")
    if not options.command:
        raise ValueError("no command after --")
    if (options.uid is None) != (options.gid is None):
        raise ValueError("--uid and --gid go together")
    return options


def confine(options: Options) -> None:
    for procs in options.cgroups:
        with open(procs, "w") as handle:
            handle.write(str(os.getpid()))
    if options.cpus:
        os.sched_setaffinity(0, options.cpus)
    if options.uid is not None and options.gid is not None:
        os.setgroups(options.groups)
        os.setresgid(options.gid, options.gid, options.gid)
        os.setresuid(options.uid, options.uid, options.uid)
        if os.getuid() != options.uid or os.geteuid() != options.uid:
            raise PermissionError("could not drop privileges")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")


def hand_over_token(token_file: str | None) -> None:
    token = os.environ.pop("JUPYTER_TOKEN", None)
    if token is None or token_file is None:
        return
    os.makedirs(os.path.dirname(token_file), mode=0o700, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
    fd = os.open(token_file, flags, 0o600)
    with os.fdopen(fd, "w") as handle:
        os.fchmod(handle.fileno(), 0o600)
        json.dump({"IdentityProvider": {"token": token}}, handle)


def remove_stale_server_files(runtime_dir: str | None) -> None:
    if not runtime_dir:
        return
    for path in glob.glob(os.path.join(glob.escape(runtime_dir), "jpserver-*")):
        try:
            os.unlink(path)
        except OSError:
            continue


def prepare(options: Options) -> None:
    """Steps 1 to 4, in this process: what a start does before Jupyter runs, whether
    it then execs the command (here) or runs it in a forked zygote child (``zygote.py``)."""
    confine(options)
    # Shared object storage is group-writable; the volume itself is 0700.
    os.umask(0o002)
    os.chdir(options.cwd)
    hand_over_token(options.token_file)
    remove_stale_server_files(os.environ.get("JUPYTER_RUNTIME_DIR"))


def main(argv: list[str]) -> int:
    try:
        options = parse(argv)
        prepare(options)
        os.execvp(options.command[0], options.command)
    except (OSError, ValueError) as exc:
        print(f"demanager launch: {exc}", file=sys.stderr)
        return 126
    return 0  # pragma: no cover - execvp does not return


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
