"""The default backend: one JupyterLab server per instance, as a child process.

Each instance gets:

* a work directory (its EVS volume ``{data_dir}/volumes/{id}``, or its OBS
  directory under ``object_storage_root``) that Jupyter serves as its root;
* a runtime directory ``{data_dir}/runtime/{id}`` with Jupyter's runtime files,
  the server log and ``server.json`` (pid, port, token), so that a restarted
  demanager finds and adopts the server, or kills it before launching anew;
* its own session and process group, a free port on 127.0.0.1 and a random token,
  passed in the environment, never on the command line.

Kernels start their own sessions (jupyter_client does that), so stopping kills
the whole process tree and then anything still tagged with the instance's
``DEMANAGER_INSTANCE_ID`` environment variable: nothing is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import psutil

from demanager.backends.base import Handle, LaunchSpec
from demanager.domain.instance import WORK_DIR, Endpoint, Storage
from demanager.domain.planning import Observation, Workload
from demanager.domain.validation import bucket_dirs
from demanager.errors import PermanentBackendError, TransientBackendError
from demanager.settings import Settings

TAG = "DEMANAGER_INSTANCE_ID"
STOP_GRACE_SECONDS = 5.0


class ProcessBackend:
    name = "process"

    def __init__(self, settings: Settings) -> None:
        self._volumes = settings.data_dir / "volumes"
        self._runtime = settings.data_dir / "runtime"
        self._object_root = settings.object_storage_root
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(2.0, connect=0.5))

    # --- paths ------------------------------------------------------------------------

    def volume_dir(self, instance_id: str) -> Path:
        return self._volumes / instance_id

    def runtime_dir(self, instance_id: str) -> Path:
        return self._runtime / instance_id

    def _object_dir(self, storage: Storage) -> Path:
        if self._object_root is None or storage.location.path is None:
            raise PermanentBackendError("object storage is not configured", code="ModelArts.6324")
        if storage.type == "obsfs":
            return self._object_root / storage.location.path.strip("/")
        return self._object_root.joinpath(*bucket_dirs(storage.location.path))

    def _root_dir(self, spec: LaunchSpec) -> Path:
        storage = spec.storage
        if storage.type == "evs":
            root = self.volume_dir(spec.instance_id)
        elif storage.type == "obs" or storage.location.mount_path in (None, WORK_DIR):
            root = self._object_dir(storage)
        else:
            root = self.volume_dir(spec.instance_id)
            _link(root, storage.location.mount_path, self._object_dir(storage))
        root.mkdir(parents=True, exist_ok=True)
        for extra in spec.extend_storage:
            _link(root, extra.location.mount_path, self._object_dir(extra))
        return root

    # --- contract ---------------------------------------------------------------------

    async def start(self, spec: LaunchSpec) -> Handle:
        await self.stop(spec.instance_id, self._read_server_file(spec.instance_id))
        try:
            root = self._root_dir(spec)
            runtime = self.runtime_dir(spec.instance_id)
            runtime.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PermanentBackendError(
                f"cannot prepare the volume: {exc}", "ModelArts.6528"
            ) from exc
        used = await asyncio.to_thread(_disk_usage, root)
        port = _free_port()
        token = secrets.token_hex(16)
        base_url = f"/notebooks/{spec.instance_id}/"
        values = {
            "python": sys.executable,
            "port": str(port),
            "root_dir": str(root),
            "base_url": base_url,
            "cpus": str(spec.flavor.params.get("CPU", 1)),
        }
        try:
            argv = [part.format(**values) for part in spec.profile.launch.command]
            extra_env = {k: v.format(**values) for k, v in spec.profile.launch.env.items()}
        except (KeyError, IndexError, ValueError) as exc:
            raise PermanentBackendError(f"bad launch template in the catalog: {exc}") from exc
        env = {
            **os.environ,
            **extra_env,
            TAG: spec.instance_id,
            "JUPYTER_TOKEN": token,
            "JUPYTER_RUNTIME_DIR": str(runtime / "jupyter"),
            "HOME": str(root),
        }
        env.pop("JUPYTER_CONFIG_DIR", None)
        log = (runtime / "server.log").open("ab")
        try:
            proc = subprocess.Popen(  # noqa: ASYNC220 - Popen returns at once; we never wait on it
                argv,
                cwd=root,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            raise PermanentBackendError(f"cannot launch {argv[0]}: {exc}") from exc
        finally:
            log.close()
        self._children[proc.pid] = proc
        handle = {
            "pid": proc.pid,
            "port": port,
            "token": token,
            "base_url": base_url,
            "launched_at": spec.now_ms,
            "created": _create_time(proc.pid),
            "volume_bytes": used,
        }
        (runtime / "server.json").write_text(json.dumps(handle), encoding="utf-8")
        return handle

    async def observe(self, instance_id: str, handle: Handle | None) -> Observation:
        found = None if handle else self._read_server_file(instance_id)
        handle = handle or found
        if not handle or self._process(handle) is None:
            return Observation(Workload.ABSENT)
        launched_at = handle.get("launched_at")
        url = f"http://127.0.0.1:{handle['port']}{handle['base_url']}api/status"
        try:
            response = await self._http.get(
                url, headers={"Authorization": f"token {handle['token']}"}
            )
        except httpx.HTTPError:
            return Observation(Workload.BOOTING, launched_at, found)
        state = Workload.READY if response.status_code == 200 else Workload.BOOTING
        return Observation(state, launched_at, found)

    async def stop(self, instance_id: str, handle: Handle | None) -> None:
        handle = handle or self._read_server_file(instance_id)
        main = self._process(handle) if handle else None
        victims = self._tree(main) + await asyncio.to_thread(_tagged, instance_id)
        if main is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(main.pid, signal.SIGTERM)  # Jupyter shuts its kernels down on TERM
        _signal_all(victims, signal.SIGTERM)
        _gone, alive = await asyncio.to_thread(psutil.wait_procs, victims, STOP_GRACE_SECONDS)
        _signal_all(alive, signal.SIGKILL)
        await asyncio.to_thread(psutil.wait_procs, alive, 2.0)
        leftovers = await asyncio.to_thread(_tagged, instance_id)
        _signal_all(leftovers, signal.SIGKILL)
        for proc in victims:
            child = self._children.pop(proc.pid, None)
            if child is not None:
                child.poll()
        with contextlib.suppress(FileNotFoundError):
            (self.runtime_dir(instance_id) / "server.json").unlink()
        if leftovers and await asyncio.to_thread(_tagged, instance_id):
            raise TransientBackendError(f"processes of {instance_id} survive SIGKILL", 1.0)

    async def delete(self, instance_id: str, handle: Handle | None, storage: Storage) -> None:
        await self.stop(instance_id, handle)
        try:
            await asyncio.to_thread(shutil.rmtree, self.volume_dir(instance_id), True)
            await asyncio.to_thread(shutil.rmtree, self.runtime_dir(instance_id), True)
        except OSError as exc:
            raise TransientBackendError(f"cannot remove the volume: {exc}", 5.0) from exc

    def endpoint(self, instance_id: str, handle: Handle) -> Endpoint | None:
        try:
            return Endpoint(
                host="127.0.0.1",
                port=int(handle["port"]),
                base_path=str(handle["base_url"]),
                headers={"Authorization": f"token {handle['token']}"},
            )
        except (KeyError, TypeError, ValueError):
            return None

    async def close(self) -> None:
        # Workloads outlive the server on purpose: a restarted server adopts them.
        await self._http.aclose()

    # --- helpers ----------------------------------------------------------------------

    def _read_server_file(self, instance_id: str) -> dict[str, Any] | None:
        try:
            data = json.loads((self.runtime_dir(instance_id) / "server.json").read_text("utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _process(self, handle: Handle) -> psutil.Process | None:
        """The handle's server process if it still runs (guarding against PID reuse)."""
        child = self._children.get(int(handle.get("pid", 0)))
        if child is not None and child.poll() is not None:
            self._children.pop(child.pid, None)
            return None
        try:
            proc = psutil.Process(int(handle["pid"]))
            if abs(proc.create_time() - float(handle.get("created", 0))) > 1.0:
                return None
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            return proc
        except (psutil.Error, KeyError, ValueError):
            return None

    @staticmethod
    def _tree(main: psutil.Process | None) -> list[psutil.Process]:
        if main is None:
            return []
        try:
            return [main, *main.children(recursive=True)]
        except psutil.Error:
            return [main]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _disk_usage(root: Path) -> int:
    """Bytes stored under ``root`` (links not followed: mounted object storage is not counted)."""
    total = 0
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            with contextlib.suppress(OSError):
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_blocks * 512
    return total


def _create_time(pid: int) -> float:
    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return 0.0


def _link(root: Path, mount_path: str | None, target: Path) -> None:
    """Make ``target`` appear at ``mount_path`` (below the work dir) inside ``root``."""
    relative = os.path.relpath(mount_path or WORK_DIR, WORK_DIR)
    if relative == ".":
        return
    target.mkdir(parents=True, exist_ok=True)
    link = root / relative
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or not link.exists():
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        link.symlink_to(target, target_is_directory=True)


def _tagged(instance_id: str) -> list[psutil.Process]:
    """Every process carrying the instance's tag in its environment."""
    found = []
    me = os.getpid()
    for proc in psutil.process_iter():
        if proc.pid == me:
            continue
        try:
            if proc.environ().get(TAG) == instance_id:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def _signal_all(procs: list[psutil.Process], sig: signal.Signals) -> None:
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(sig)
