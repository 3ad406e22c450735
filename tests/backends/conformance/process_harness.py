"""The process backend in the conformance suite: workloads are local process trees."""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
from pathlib import Path

from demanager.backends.base import Backend, BackendContext
from demanager.backends.options import ProcessOptions
from demanager.backends.process import ProcessBackend, ProcessHandle
from tests.backends.conformance.harness import Harness
from tests.server import notebook_python, processes_of, zygote_setting


class ProcessHarness(Harness):
    backend = "process"
    broken_reason = "exited before it answered"

    def _data_dirs(self) -> list[Path]:
        return [self.workdir / "server", self.workdir / "direct"]

    def make_backend(self) -> Backend:
        options = ProcessOptions(notebook_python=notebook_python(), zygote=zygote_setting())
        return ProcessBackend(options, BackendContext(data_dir=self.workdir / "direct"))

    def _handle(self, instance_id: str) -> ProcessHandle | None:
        for data_dir in self._data_dirs():
            path = data_dir / "runtime" / instance_id / "server.json"
            with contextlib.suppress(OSError, ValueError):
                return ProcessHandle.model_validate_json(path.read_text(encoding="utf-8"))
        return None

    def workload_id(self, instance_id: str) -> str | None:
        handle = self._handle(instance_id)
        if handle is None or handle.pid not in processes_of(instance_id):
            return None
        return f"pid {handle.pid} started at tick {handle.start_ticks}"

    def kill_workload(self, instance_id: str) -> None:
        handle = self._handle(instance_id)
        assert handle is not None, f"{instance_id} has no server to kill"
        os.kill(handle.pid, signal.SIGKILL)

    def leftovers(self, instance_id: str) -> list[str]:
        left = [f"process {pid}" for pid in processes_of(instance_id)]
        for data_dir in self._data_dirs():
            for kind in ("volumes", "runtime", "objects"):
                if (data_dir / kind / instance_id).exists():
                    left.append(f"{kind}/{instance_id} in {data_dir}")
        left += [
            f"user {entry.pw_name}"
            for entry in pwd.getpwall()
            if entry.pw_gecos == f"demanager instance {instance_id}"
        ]
        return left
