"""The default backend: one JupyterLab server per instance, as a child process.

Each instance gets:

* a private directory, its EVS volume ``{data_dir}/volumes/{id}`` (mode 0700),
  which is also the work directory Jupyter serves unless the instance works in
  object storage (a folder under ``object_storage_root``);
* a runtime directory ``{data_dir}/runtime/{id}`` (root-only) with the server
  log and ``server.json`` (pid, port, token), so that a restarted demanager
  finds and adopts the server, or kills it before launching anew;
* its own session, a free port on 127.0.0.1 and a random token, never on the
  command line;
* when the server runs as root, a uid of its own (``sandbox.py``), and on hosts
  with a writable cgroup hierarchy, a cgroup of its own (``cgroups.py``) that
  ``launch.py`` joins before Jupyter runs;
* the GPUs assigned to it, whole, as ``CUDA_VISIBLE_DEVICES`` (empty for a flavor
  without GPUs on a host with some: a notebook sees no GPU it was not given);
* the flavor's CPUs and memory as limits, through the cpu and memory controllers
  where they are writable; CPUs otherwise through CPU affinity (the least-used
  CPUs of the host), memory otherwise not at all (``check()`` says so). A process
  the kernel kills at the memory limit (a kernel; Jupyter restarts it) shows as a
  warning in ``Observation.warning``.

Jupyter itself is forked from the notebook zygote (``zygotes.py``, ``zygote.py``),
which imported it once, whenever the profile's command allows; the child is confined
by the launcher's own code. Otherwise, and whenever the zygote cannot serve, the
launcher starts it afresh (a plain start).

Stopping sends SIGTERM (Jupyter shuts its kernels down), then kills the whole
cgroup: nothing is left behind, whatever a notebook did to its environment or
its process tree. Without cgroups it falls back to killing the process tree and
everything carrying the instance's environment tag. docs/security.md says what
each mode isolates.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import math
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Protocol

import httpx
import psutil

from demanager.backends import cgroups, fusemounts, jupyter, sandbox, zygotes
from demanager.backends.base import BackendContext, Handle, LaunchSpec, recipe_of
from demanager.backends.node import start_ticks, this_node
from demanager.backends.options import ProcessOptions, ProcessRecipe
from demanager.domain.instance import WORK_DIR, Endpoint, FailedReason, Storage
from demanager.domain.planning import Observation, Workload
from demanager.domain.validation import bucket_dirs
from demanager.errors import PermanentBackendError, TransientBackendError

log = logging.getLogger(__name__)

STOP_GRACE_SECONDS = 5.0
PORT_ATTEMPTS = 3
"""Launches within one start when the picked port is taken before Jupyter binds it."""
BIND_WAIT_SECONDS = 15.0
"""How long start waits for the server to listen (or exit) before leaving it to observe."""
SCAN_MAX_ENTRIES = 200_000
SCAN_MAX_SECONDS = 1.0
"""The volume scan at each start stops at either bound (about 3 us per file): past them
``volume_bytes`` is a lower bound ("at least"), and ``volume_scan_complete`` is false."""
LOG_MAX_BYTES = 4 * 1024 * 1024
LOG_KEEP_BYTES = 1024 * 1024
"""server.log grows across launches; past LOG_MAX_BYTES a start keeps only its tail."""
CUDA_VISIBLE_DEVICES = "CUDA_VISIBLE_DEVICES"
"""Names the GPUs CUDA may use in the notebook: those assigned to the instance."""
LAUNCHER = str(Path(__file__).with_name("launch.py"))
STATE_DIR = ".demanager"
"""Inside the private volume, owned by the instance: Jupyter's runtime and config dirs."""


class ProcessHandle(Handle):
    pid: int
    port: int
    token: str
    base_url: str
    created: float = 0.0
    """The process's creation time: the PID-reuse guard of handles without start ticks."""
    start_ticks: int | None = None
    """Clock ticks since boot at which the process started: the PID-reuse guard."""
    volume_bytes: int | None = None
    volume_scan_complete: bool = True
    memory_limit: int | None = None
    """Bytes the memory controller holds the instance to; None when not enforced."""
    oom_baseline: int = 0
    """The group's OOM-kill counter at launch: only kills after it are this run's."""
    cpus: tuple[int, ...] | None = None
    """The CPUs the workload is pinned to, when affinity stands in for a cpu controller."""


class ProcessBackend:
    name = "process"
    options_type = ProcessOptions
    handle_type = ProcessHandle
    recipe_type = ProcessRecipe

    def __init__(self, options: ProcessOptions, context: BackendContext) -> None:
        self.node: str | None = this_node(context.node_id)
        self._volumes = context.data_dir / "volumes"
        self._runtime = context.data_dir / "runtime"
        self._object_root = context.object_storage_root
        self._mounts = context.host_mounts
        self._python = str(options.notebook_python or sys.executable)
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(2.0, connect=0.5))
        self._users = sandbox.Users() if sandbox.is_root() else None
        self._zygote = (
            zygotes.Zygote(self._python, LAUNCHER, context.data_dir / "zygote")
            if options.zygote
            else None
        )
        if self._zygote is not None:
            # Built by a running server (in its event loop): import Jupyter now, so the
            # first start finds the zygote ready. Built elsewhere (`demanager doctor`, a
            # thread), it starts with the first start.
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop()
                self._zygote.ensure_started()
        _private_dir(self._volumes, 0o711)  # traversable by instance uids, not listable
        _private_dir(self._runtime, 0o700)
        if self._users is not None:
            problem = sandbox.probe(self._python, self._volumes)
            if problem:
                raise sandbox.SandboxError(
                    f"{problem}. As root, every instance runs under an unprivileged uid of "
                    "its own: set DEMANAGER_PROCESS__NOTEBOOK_PYTHON to a Python with "
                    "JupyterLab that any user can execute (`make notebook-env` builds "
                    "/opt/demanager/notebook-env), and make every parent of the data dir "
                    "traversable (o+x). See docs/security.md."
                )
        else:
            log.warning(
                "demanager is not running as root: notebooks run as its own user (uid %d) "
                "and can read everything it can, the database and other instances' "
                "volumes included; see docs/security.md",
                os.geteuid(),
            )
        self.obsfs: fusemounts.FuseChoice | None = None
        """How ``obsfs`` buckets reach the notebooks (S3 configured): FUSE or copies."""
        if self._mounts is not None:
            self.obsfs = fusemounts.choose(self._mounts.deployment)
            self._mounts.use_fuse(self.obsfs.rclone)
            log.info("obsfs buckets: %s", self.obsfs.why)
        self._cgroups = cgroups.detect()
        if self._cgroups is None:
            log.warning(
                "no writable cgroup hierarchy: stop finds an instance's processes by an "
                "environment tag, which a notebook can remove; see docs/security.md"
            )
        else:
            log.info("instances get their own cgroup (%r)", self._cgroups)
        self._limits = cgroups.detect_controllers(self._cgroups)
        self._pinned: dict[str, tuple[int, ...]] = {}
        for name, controller in self._limits.items():
            log.info("flavor %s limits are enforced by the %r", name.upper(), controller)
        if "cpu" not in self._limits:
            log.warning(
                "no writable cpu cgroup controller: each instance is pinned to as many "
                "CPUs as its flavor has (CPU affinity, which a notebook can widen)"
            )
        if "memory" not in self._limits:
            log.warning(
                "no writable memory cgroup controller: the flavor's memory is not "
                "enforced; see docs/security.md"
            )

    # --- paths ------------------------------------------------------------------------

    def volume_dir(self, instance_id: str) -> Path:
        return self._volumes / instance_id

    def runtime_dir(self, instance_id: str) -> Path:
        return self._runtime / instance_id

    def _object_dir(self, storage: Storage, project_id: str) -> Path:
        """Buckets are the project's own: ``{root}/{project}/{bucket}/…``."""
        if self._object_root is None or storage.location.path is None:
            raise PermanentBackendError("object storage is not configured", code="ModelArts.6324")
        project = self._object_root / sandbox.project_dir_name(project_id)
        if storage.type == "obsfs":
            return project / storage.location.path.strip("/")
        return project.joinpath(*bucket_dirs(storage.location.path))

    def _root_dir(
        self, spec: LaunchSpec, owner: sandbox.Account | None, obs_gid: int | None
    ) -> Path:
        storage = spec.storage
        private = self.volume_dir(spec.instance_id)
        if storage.type == "evs":
            root = private
        elif storage.type == "obs" or storage.location.mount_path in (None, WORK_DIR):
            root = self._object_dir(storage, spec.project_id)
            _object_folder(self._object_root, root, obs_gid)
        else:
            root = private
            target = self._object_dir(storage, spec.project_id)
            _object_folder(self._object_root, target, obs_gid)
            _link(root, storage.location.mount_path, target, owner)
        for extra in spec.extend_storage:
            target = self._object_dir(extra, spec.project_id)
            _object_folder(self._object_root, target, obs_gid)
            _link(root, extra.location.mount_path, target, owner)
        return root

    def _uses_object_storage(self, spec: LaunchSpec) -> bool:
        """Whether the instance works in the folder standing in for object storage
        (whose buckets its project's instances share through a group)."""
        return self._mounts is None and (spec.storage.type != "evs" or bool(spec.extend_storage))

    async def _synced_root(
        self, spec: LaunchSpec, private: Path, owner: sandbox.Account | None
    ) -> Path:
        """The work dir with the instance's buckets synced in (or, for whole buckets where
        FUSE is usable, mounted): the working directory's bucket is the root itself,
        every other one a link at its mount path."""
        assert self._mounts is not None
        prepared = await self._mounts.prepare(spec, owner)
        root = next((p.folder for p in prepared if p.mount.is_work_dir), private)
        for each in prepared:
            if not each.mount.is_work_dir:
                _link(root, each.mount.mount_path, each.folder, owner)
        return root

    # --- contract ---------------------------------------------------------------------

    async def start(self, spec: LaunchSpec) -> ProcessHandle:
        # launched_at is when the server is spawned, on the engine's clock: what comes
        # before (stopping a leftover, preparing and measuring the volume) is not boot time.
        began = time.monotonic()
        instance_id = spec.instance_id
        recipe = recipe_of(ProcessRecipe, self.name, spec.profile)
        await self.stop(instance_id, self._read_server_file(instance_id))
        try:
            account, obs_gid = await self._identity(spec)
            private = self.volume_dir(instance_id)
            await asyncio.to_thread(_owned_dir, private, account)
            if self._mounts is not None:
                root = await self._synced_root(spec, private, account)
            else:
                root = self._root_dir(spec, account, obs_gid)
            runtime = self.runtime_dir(instance_id)
            runtime.mkdir(mode=0o700, exist_ok=True)
            procs = self._cgroups.create(instance_id) if self._cgroups else None
            limits = cgroups.Limits(spec.flavor.resources.cpus, spec.flavor.resources.memory_bytes)
            joined = [
                str(controller.create(instance_id, limits))
                for controller in self._limits.values()
            ]
            memory = self._limits.get("memory")
            baseline = (memory.oom_kills(instance_id) if memory else None) or 0
        except sandbox.SandboxError as exc:
            raise TransientBackendError(str(exc), 5.0) from exc
        except OSError as exc:
            raise PermanentBackendError(
                f"cannot prepare the volume: {exc}", "ModelArts.6528"
            ) from exc
        used, complete = await asyncio.to_thread(
            _disk_usage, root, SCAN_MAX_ENTRIES, SCAN_MAX_SECONDS
        )
        await asyncio.to_thread(_cap_log, runtime / "server.log")
        # A synced bucket is no home: the caches and histories of the tools in it would
        # go to the bucket. The private volume is.
        home = private if self._mounts is not None else root
        token = secrets.token_hex(16)
        base_url = f"/notebooks/{instance_id}/"
        state = private / STATE_DIR / "jupyter"
        own = {
            # launch.py moves the token into a config file only the instance can read.
            "JUPYTER_TOKEN": token,
            "JUPYTER_RUNTIME_DIR": str(state / "runtime"),
            "JUPYTER_CONFIG_DIR": str(state / "config"),
        }
        if account is not None:
            own.update(USER=account.name, LOGNAME=account.name)
        if spec.gpus is not None:
            # The assigned GPUs, whole, and no other: set by the backend, so a profile's
            # env cannot widen it. An empty value hides every GPU from CUDA.
            own[CUDA_VISIBLE_DEVICES] = ",".join(spec.gpus)
        if procs is None:
            own[sandbox.FALLBACK_TAG] = instance_id
        # The launcher's options: the same confinement whether the launcher applies it
        # before its exec or a zygote's child before it runs Jupyter.
        launcher = ["--cwd", str(root)]
        launcher += ["--token-file", str(state / "config" / "jupyter_server_config.json")]
        for group in dict.fromkeys([*([str(procs)] if procs else []), *joined]):
            launcher += ["--cgroup", group]
        pinned = None
        if "cpu" not in self._limits:
            others = {k: v for k, v in self._pinned.items() if k != instance_id}
            pinned = pick_cpus(os.sched_getaffinity(0), others, math.ceil(limits.cpus or 1))
            self._pinned[instance_id] = pinned
            for cpu in pinned:
                launcher += ["--cpu", str(cpu)]
        if account is not None:
            launcher += ["--uid", str(account.uid), "--gid", str(account.gid)]
            if obs_gid is not None:
                launcher += ["--group", str(obs_gid)]
        values = {
            "python": self._python,
            "root_dir": str(root),
            "base_url": base_url,
            "cpus": str(spec.flavor.params.get("CPU", 1)),
        }
        for attempt in range(1, PORT_ATTEMPTS + 1):
            # The port is free now, not necessarily when Jupyter binds it (with no
            # retries of its own, it exits): a lost race relaunches on another port.
            port = _free_port()
            values["port"] = str(port)
            try:
                argv = [part.format(**values) for part in recipe.command]
                extra_env = {k: v.format(**values) for k, v in recipe.env.items()}
            except (KeyError, IndexError, ValueError) as exc:
                raise PermanentBackendError(f"bad launch template in the catalog: {exc}") from exc
            env = sandbox.notebook_env(
                os.environ, python=self._python, home=home, extra=extra_env, backend_vars=own
            )
            fork = recipe.zygote and zygotes.forkable(argv, extra_env, self._python)
            proc, log_offset = await self._launch(
                launcher, argv, env, runtime / "server.log", forkable=fork
            )
            launched_at = spec.now_ms + int((time.monotonic() - began) * 1000)
            if not await self._lost_port(proc, port, runtime / "server.log", log_offset):
                break
            log.warning("port %d of %s was taken (attempt %d)", port, instance_id, attempt)
        handle = ProcessHandle(
            pid=proc.pid,
            port=port,
            token=token,
            base_url=base_url,
            launched_at=launched_at,
            created=_create_time(proc.pid),
            start_ticks=start_ticks(proc.pid),
            volume_bytes=used,
            volume_scan_complete=complete,
            memory_limit=limits.memory_bytes if memory and limits.memory_bytes else None,
            oom_baseline=baseline,
            cpus=pinned,
        )
        fd = _open_private(runtime / "server.json", os.O_WRONLY | os.O_TRUNC)
        with os.fdopen(fd, "w", encoding="utf-8") as record:
            record.write(handle.model_dump_json())
        return handle

    async def _launch(
        self,
        launcher: list[str],
        argv: list[str],
        env: dict[str, str],
        log_path: Path,
        *,
        forkable: bool,
    ) -> tuple[_Launched, int]:
        """Start the server: forked by the zygote where it can run ``argv``, else (and
        whenever the zygote fails to) through the launcher; (the process, the log's size
        before)."""
        if self._zygote is not None and forkable:
            server_log = _open_private(log_path, os.O_WRONLY | os.O_APPEND)
            try:
                offset = os.fstat(server_log).st_size
                request = {"launcher": launcher, "env": env, "argv": argv}
                pid = await self._zygote.fork(request, server_log)
            finally:
                os.close(server_log)
            if pid is not None:
                return _Forked(pid), offset
        command = [sys.executable, "-I", "-S", LAUNCHER, *launcher, "--", *argv]
        return self._spawn(command, env, log_path)

    def _spawn(
        self, command: list[str], env: dict[str, str], log_path: Path
    ) -> tuple[subprocess.Popen[bytes], int]:
        """Launch ``command`` in a session of its own; (the process, the log's size before)."""
        server_log = _open_private(log_path, os.O_WRONLY | os.O_APPEND)
        try:
            offset = os.fstat(server_log).st_size
            # Popen returns at once; the caller never blocks on the child.
            proc = subprocess.Popen(
                command,
                cwd="/",
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=server_log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            raise PermanentBackendError(f"cannot launch {command[0]}: {exc}") from exc
        finally:
            os.close(server_log)
        self._children[proc.pid] = proc
        return proc, offset

    async def _lost_port(
        self, proc: _Launched, port: int, log_path: Path, log_offset: int
    ) -> bool:
        """Wait until the server listens on ``port`` or exits; true if it exited because
        the port was taken. Any other outcome is left to ``observe``."""

        def settled() -> bool:
            if proc.poll() is not None:
                return True
            try:
                return any(
                    c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
                    for c in psutil.Process(proc.pid).net_connections("tcp")
                )
            except psutil.Error:
                return True  # gone, or not ours to inspect: nothing more to learn here

        await _until(settled, BIND_WAIT_SECONDS)
        if proc.poll() is None:
            return False
        self._reap()
        try:
            with log_path.open("rb") as server_log:
                server_log.seek(log_offset)
                said = server_log.read(LOG_KEEP_BYTES)
        except OSError:
            return False
        return f"port {port} is already in use".encode() in said

    async def _identity(self, spec: LaunchSpec) -> tuple[sandbox.Account | None, int | None]:
        """The instance's own user, and its project's object-storage group if it mounts a
        bucket."""
        if self._users is None:
            return None, None
        account = await self._users.ensure(spec.instance_id)
        if not self._uses_object_storage(spec):
            return account, None
        return account, await self._users.ensure_group(sandbox.project_group(spec.project_id))

    async def observe(
        self, instance_id: str, handle: ProcessHandle | None
    ) -> Observation[ProcessHandle]:
        found = None if handle else self._read_server_file(instance_id)
        handle = handle or found
        if not handle or self._process(handle) is None:
            return Observation(Workload.ABSENT)
        if handle.cpus:
            self._pinned[instance_id] = handle.cpus  # adopted: count its CPUs as used
        seen: Observation[ProcessHandle] = Observation(
            Workload.BOOTING,
            handle.launched_at,
            found,
            volume_bytes=handle.volume_bytes,
            warning=self._oom_warning(instance_id, handle)
            or (self._mounts.warning(instance_id) if self._mounts is not None else None),
        )
        endpoint = _endpoint(handle)
        if not await jupyter.answers(self._http, endpoint):
            return seen
        return dataclasses.replace(seen, workload=Workload.READY, endpoint=endpoint)

    def _oom_warning(self, instance_id: str, handle: ProcessHandle) -> FailedReason | None:
        memory = self._limits.get("memory")
        if memory is None or handle.memory_limit is None:
            return None
        kills = memory.oom_kills(instance_id)
        if kills is None or kills <= handle.oom_baseline:
            return None
        return oom_warning(kills - handle.oom_baseline, handle.memory_limit)

    async def check(self) -> list[str]:
        problems = []
        if not os.access(self._python, os.X_OK):
            problems.append(f"the notebook interpreter {self._python} is not executable")
        else:
            probe = await asyncio.create_subprocess_exec(
                self._python, "-c", "import jupyterlab",
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            )
            if await probe.wait() != 0:
                problems.append(
                    f"{self._python} cannot import jupyterlab: install it there, or set "
                    "DEMANAGER_PROCESS__NOTEBOOK_PYTHON"
                )
        if self._users is None:
            problems.append(
                "not running as root: notebooks run as the server's own user and can read "
                "its files (docs/security.md)"
            )
        if self._cgroups is None:
            problems.append("no writable cgroup hierarchy: limits and clean stops are weaker")
        if self._zygote is not None and self._zygote.deaths:
            problems.append(
                f"the notebook zygote died {self._zygote.deaths} time(s) since the server "
                f"started; its log: {self._zygote.log_path}"
            )
        if "memory" not in self._limits:
            problems.append(
                "no writable memory cgroup controller: the flavor's memory is not enforced"
            )
        if "cpu" not in self._limits:
            problems.append(
                "no writable cpu cgroup controller: the flavor's CPUs are enforced by CPU "
                "affinity only, which a notebook can widen"
            )
        return problems

    async def stop(self, instance_id: str, handle: ProcessHandle | None) -> None:
        handle = handle or self._read_server_file(instance_id)
        main = self._process(handle) if handle else None
        if main is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(main.pid, signal.SIGTERM)  # Jupyter shuts its kernels down on TERM
        if self._cgroups is not None:
            await self._stop_group(self._cgroups, instance_id)
            # A workload launched before this host had cgroups (or an upgrade) is outside.
            _signal_all(self._tree(main), signal.SIGKILL)
        else:
            await self._stop_tagged(instance_id, main)
        await self._remove_limits(instance_id)
        self._pinned.pop(instance_id, None)
        self._reap()
        with contextlib.suppress(FileNotFoundError):
            (self.runtime_dir(instance_id) / "server.json").unlink()
        if self._mounts is not None:
            await self._mounts.finish(instance_id)  # every write is in by now

    async def _stop_group(self, groups: cgroups.Cgroups, instance_id: str) -> None:
        def empty() -> bool:
            self._reap()
            return not groups.pids(instance_id)

        if not await _until(empty, STOP_GRACE_SECONDS):
            await asyncio.to_thread(groups.kill, instance_id)
            if not await _until(empty, 5.0):
                raise TransientBackendError(f"processes of {instance_id} survive SIGKILL", 1.0)
        if not groups.remove(instance_id):
            raise TransientBackendError(f"cannot remove the cgroup of {instance_id}", 1.0)

    async def _remove_limits(self, instance_id: str) -> None:
        """Remove the instance's cpu and memory groups (emptied by the stop before)."""
        for controller in self._limits.values():
            if not await _until(functools.partial(controller.remove, instance_id), 2.0):
                raise TransientBackendError(
                    f"cannot remove the {controller.name} cgroup of {instance_id}", 1.0
                )

    async def _stop_tagged(self, instance_id: str, main: psutil.Process | None) -> None:
        victims = self._tree(main) + await asyncio.to_thread(_tagged, instance_id)
        _signal_all(victims, signal.SIGTERM)
        _gone, alive = await asyncio.to_thread(psutil.wait_procs, victims, STOP_GRACE_SECONDS)
        _signal_all(alive, signal.SIGKILL)
        await asyncio.to_thread(psutil.wait_procs, alive, 2.0)
        leftovers = await asyncio.to_thread(_tagged, instance_id)
        _signal_all(leftovers, signal.SIGKILL)
        if leftovers and await asyncio.to_thread(_tagged, instance_id):
            raise TransientBackendError(f"processes of {instance_id} survive SIGKILL", 1.0)

    def _reap(self) -> None:
        for pid, child in list(self._children.items()):
            if child.poll() is not None:
                self._children.pop(pid, None)

    async def delete(
        self, instance_id: str, handle: ProcessHandle | None, storage: Storage
    ) -> None:
        await self.stop(instance_id, handle)
        if self._mounts is not None:
            await self._mounts.remove(instance_id)
        try:
            await asyncio.to_thread(shutil.rmtree, self.volume_dir(instance_id), True)
            await asyncio.to_thread(shutil.rmtree, self.runtime_dir(instance_id), True)
        except OSError as exc:
            raise TransientBackendError(f"cannot remove the volume: {exc}", 5.0) from exc
        if self._users is not None:
            try:
                await self._users.remove(instance_id)
            except sandbox.SandboxError as exc:
                raise TransientBackendError(str(exc), 5.0) from exc

    async def close(self) -> None:
        # Workloads outlive the server on purpose: a restarted server adopts them. The
        # zygote does not: it only ever serves this server.
        if self._zygote is not None:
            await self._zygote.close()
        await self._http.aclose()

    # --- helpers ----------------------------------------------------------------------

    def _read_server_file(self, instance_id: str) -> ProcessHandle | None:
        try:
            data = (self.runtime_dir(instance_id) / "server.json").read_text("utf-8")
            return ProcessHandle.model_validate_json(data)
        except (OSError, ValueError):
            return None

    def _process(self, handle: ProcessHandle) -> psutil.Process | None:
        """The handle's server process if it still runs (guarding against PID reuse)."""
        child = self._children.get(handle.pid)
        if child is not None and child.poll() is not None:
            self._children.pop(child.pid, None)
            return None
        try:
            proc = psutil.Process(handle.pid)
            if handle.start_ticks is not None:
                # Clock ticks since boot: a wall-clock jump does not move them.
                if start_ticks(proc.pid) != handle.start_ticks:
                    return None
            elif abs(proc.create_time() - handle.created) > 1.0:
                return None  # a handle written before start_ticks existed
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            return proc
        except psutil.Error:
            return None

    @staticmethod
    def _tree(main: psutil.Process | None) -> list[psutil.Process]:
        if main is None:
            return []
        try:
            return [main, *main.children(recursive=True)]
        except psutil.Error:
            return [main]


class _Launched(Protocol):
    """A server just started: a child of this process (``Popen``) or of the zygote."""

    @property
    def pid(self) -> int: ...

    def poll(self) -> int | None: ...


class _Forked:
    """A server the zygote forked: not this process's child, so known by pid and start
    time only (the zygote's kernel-reaped children leave no exit status)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._ticks = start_ticks(pid)

    def poll(self) -> int | None:
        """None while it runs, else -1 (its exit status is not known)."""
        if self._ticks is None or start_ticks(self.pid) != self._ticks:
            return -1
        try:
            if psutil.Process(self.pid).status() == psutil.STATUS_ZOMBIE:
                return -1
        except psutil.Error:
            return -1
        return None


def pick_cpus(
    available: Iterable[int], pinned: Mapping[str, tuple[int, ...]], count: int
) -> tuple[int, ...]:
    """``count`` CPUs of ``available`` (at least one, at most all), the least used by the
    other instances' ``pinned`` CPUs first, ties to the lowest number."""
    load = Counter(cpu for cpus in pinned.values() for cpu in cpus)
    ordered = sorted(available, key=lambda cpu: (load[cpu], cpu))
    return tuple(sorted(ordered[: max(1, min(count, len(ordered)))]))


def oom_warning(kills: int, limit_bytes: int) -> FailedReason:
    """What the instance shows once the kernel killed a process of it at the memory
    limit. 6361 is the contract's code for a notebook fault; ``detail.cause`` says which."""
    return FailedReason(
        "ModelArts.6361",
        f"A process of the notebook was killed at the flavor's memory limit "
        f"({_size(limit_bytes)}); restart the kernel and use less memory.",
        {"cause": "oom_killed", "oom_kills": str(kills), "memory_limit_bytes": str(limit_bytes)},
    )


def _size(count: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if count >= scale:
            return f"{count / scale:.1f}".removesuffix(".0") + f" {unit}"
    return f"{count} bytes"


def _endpoint(handle: ProcessHandle) -> Endpoint:
    return Endpoint(
        host="127.0.0.1",
        port=handle.port,
        base_path=handle.base_url,
        headers={"Authorization": f"token {handle.token}"},
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _disk_usage(root: Path, max_entries: int, max_seconds: float) -> tuple[int, bool]:
    """Bytes stored under ``root`` (links not followed: mounted object storage is not
    counted), and whether every file was counted: the scan stops after ``max_entries``
    entries or ``max_seconds``, so a huge volume cannot hold a start up; the total is
    then a lower bound."""
    total = 0
    seen = 0
    deadline = time.monotonic() + max_seconds
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        seen += len(entries)
        if seen > max_entries or time.monotonic() > deadline:
            return total, False
        for entry in entries:
            with contextlib.suppress(OSError):
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_blocks * 512
    return total, True


def _cap_log(path: Path) -> None:
    """Keep the last LOG_KEEP_BYTES of ``path`` once it passes LOG_MAX_BYTES."""
    try:
        if path.stat().st_size <= LOG_MAX_BYTES:
            return
        with path.open("rb") as old:
            old.seek(-LOG_KEEP_BYTES, os.SEEK_END)
            tail = old.read()
    except OSError:
        return
    fresh = path.with_name(path.name + ".new")
    with contextlib.suppress(FileNotFoundError):
        fresh.unlink()
    fd = _open_private(fresh, os.O_WRONLY | os.O_TRUNC)
    with os.fdopen(fd, "wb") as new:
        new.write(b"[demanager: earlier output dropped]\n")
        new.write(tail[tail.find(b"\n") + 1 :])  # from the first whole line
    fresh.replace(path)


def _create_time(pid: int) -> float:
    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return 0.0


def _link(root: Path, mount_path: str | None, target: Path, owner: sandbox.Account | None) -> None:
    """Make ``target`` appear at ``mount_path`` (below the work dir) inside ``root``.

    ``root`` belongs to the notebook, which may have planted symlinks in it: the
    link's folder must resolve inside ``root``, or this (root-run) code would
    write wherever they point.
    """
    relative = os.path.relpath(mount_path or WORK_DIR, WORK_DIR)
    if relative == ".":
        return
    link = root / relative
    folder = root
    for part in Path(relative).parent.parts:
        folder = folder / part
        if folder.is_symlink():
            raise PermanentBackendError(f"{mount_path} crosses a symbolic link of the volume")
        if not folder.exists():
            folder.mkdir(mode=0o700)
            if owner is not None:
                os.chown(folder, owner.uid, owner.gid)
    if link.is_symlink() or not link.exists():
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        link.symlink_to(target, target_is_directory=True)
        if owner is not None:
            os.lchown(link, owner.uid, owner.gid)


def _private_dir(path: Path, mode: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(mode)


def _owned_dir(path: Path, owner: sandbox.Account | None) -> None:
    """The instance's volume: 0700 and, as root, owned by its uid (all of it, if the
    uid changed since the files were written, as when a user was recreated)."""
    path.mkdir(mode=0o700, exist_ok=True)
    path.chmod(0o700)
    if owner is None or path.stat().st_uid == owner.uid:
        return
    os.chown(path, owner.uid, owner.gid)
    for folder, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            with contextlib.suppress(FileNotFoundError):
                os.lchown(os.path.join(folder, name), owner.uid, owner.gid)


def _object_folder(object_root: Path | None, target: Path, gid: int | None) -> None:
    """Create an object-storage folder; as root, shared through the project's group
    (setgid, 2770) since a project's buckets are shared between its instances by design,
    and closed to every other project's."""
    if object_root is None:
        return
    missing = [p for p in [target, *target.parents] if not p.exists()]
    for folder in reversed(missing):
        folder.mkdir(mode=0o700 if gid is None else 0o2770)
        if gid is not None:
            os.chown(folder, -1, gid)
            folder.chmod(0o2770)
    if gid is not None and target.stat().st_gid != gid:
        os.chown(target, -1, gid)
        target.chmod(0o2770)


def _open_private(path: Path, flags: int) -> int:
    """Open (creating 0600) a file of the root-only runtime dir."""
    fd = os.open(path, flags | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    os.fchmod(fd, 0o600)
    return fd


async def _until(predicate: Callable[[], bool], seconds: float) -> bool:
    """Poll ``predicate`` (cheap, sync) with backoff until true or ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    delay = 0.02
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, 0.25)


def _tagged(instance_id: str) -> list[psutil.Process]:
    """Every process carrying the instance's tag in its environment."""
    found = []
    me = os.getpid()
    for proc in psutil.process_iter():
        if proc.pid == me:
            continue
        try:
            if proc.environ().get(sandbox.FALLBACK_TAG) == instance_id:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def _signal_all(procs: list[psutil.Process], sig: signal.Signals) -> None:
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(sig)
