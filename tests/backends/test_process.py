"""The process backend on its own, with real JupyterLab servers (as root, as CI runs it:
instances get their own uid)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from demanager.backends import node, process, sandbox
from demanager.backends.base import BackendContext, Handle, LaunchSpec
from demanager.backends.options import ProcessOptions
from demanager.backends.process import ProcessBackend
from demanager.catalog import load_catalog
from demanager.domain.catalog import Flavor
from demanager.domain.instance import Storage
from demanager.domain.planning import Workload
from tests.limits_probe import VISIBLE_CPUS
from tests.server import notebook_python, traversable_dir, zygote_setting

CATALOG = load_catalog(None)


@pytest.fixture
def data_dir() -> Iterator[Path]:
    path = traversable_dir("dm-process-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def backend(data_dir: Path) -> AsyncIterator[ProcessBackend]:
    # Only when the environment does not already name one (as `make test` does as root):
    # an explicit None would override it.
    options = ProcessOptions(notebook_python=notebook_python(), zygote=zygote_setting())
    built = await asyncio.to_thread(ProcessBackend, options, BackendContext(data_dir=data_dir))
    yield built
    await built.close()


def _spec(instance_id: str, now_ms: int = 1_000_000) -> LaunchSpec:
    return LaunchSpec(
        instance_id=instance_id,
        project_id="p" * 32,
        profile=CATALOG.profiles["Multi-Engine 1.0 (python3)-cpu"],
        flavor=CATALOG.flavors["modelarts.vm.cpu.2u"],
        storage=Storage("evs"),
        extend_storage=(),
        now_ms=now_ms,
    )


async def _ready(backend: ProcessBackend, instance_id: str, handle: Handle) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if (await backend.observe(instance_id, handle)).workload is Workload.READY:
            return
        await asyncio.sleep(0.3)
    log = (backend.runtime_dir(instance_id) / "server.log").read_text(errors="replace")
    raise AssertionError(f"not ready; server.log:\n{log[-3000:]}")


@pytest.fixture
async def instance(backend: ProcessBackend) -> AsyncIterator[str]:
    instance_id = uuid.uuid4().hex
    yield instance_id
    await backend.delete(instance_id, None, Storage("evs"))


# --- pid reuse --------------------------------------------------------------------------


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


def test_defect_11_pid_guard_ignores_wall_clock_jumps(
    backend: ProcessBackend, sleeper: subprocess.Popen[bytes]
) -> None:
    created = process._create_time(sleeper.pid)
    ticks = node.start_ticks(sleeper.pid)
    assert isinstance(ticks, int)
    # The wall clock moved an hour since the handle was written: still the same process.
    jumped = process.ProcessHandle(pid=sleeper.pid, port=1, token="t", base_url="/",
                                   created=created + 3600, start_ticks=ticks)
    assert backend._process(jumped) is not None
    reused = jumped.model_copy(update={"created": created, "start_ticks": ticks + 1})
    assert backend._process(reused) is None, "another process under the same pid"
    # A handle from before start_ticks
    older = jumped.model_copy(update={"created": created, "start_ticks": None})
    assert backend._process(older) is not None
    assert backend._process(older.model_copy(update={"created": created + 3600})) is None


# --- the start ----------------------------------------------------------------------------


@pytest.mark.slow
async def test_defect_10_taken_port_does_not_fail_the_start(
    backend: ProcessBackend, instance: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What is tested is the relaunch on a port found taken, not how fast Jupyter gets to
    # bind: on a loaded machine it can take longer than the wait the start allows (after
    # which a late exit is left to observe), so the wait is made long enough here.
    monkeypatch.setattr(process, "BIND_WAIT_SECONDS", 120.0)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        picks = iter([busy])
        real = process._free_port
        monkeypatch.setattr(process, "_free_port", lambda: next(picks, None) or real())
        handle = await backend.start(_spec(instance))
        assert handle.port != busy
        await _ready(backend, instance, handle)


@pytest.mark.slow
async def test_defect_04_launched_at_is_taken_at_the_spawn(
    backend: ProcessBackend, instance: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    measure = process._disk_usage

    def slow_scan(*args: Any) -> Any:
        time.sleep(1.0)  # a large volume
        return measure(*args)

    monkeypatch.setattr(process, "_disk_usage", slow_scan)
    handle = await backend.start(_spec(instance, now_ms=1_000_000))
    assert handle.launched_at >= 1_001_000
    await _ready(backend, instance, handle)


def test_defect_04_volume_scan_is_bounded(tmp_path: Path) -> None:
    for folder in range(5):
        (tmp_path / str(folder)).mkdir()
        for name in range(20):
            (tmp_path / str(folder) / str(name)).write_bytes(b"x" * 5000)
    total, complete = process._disk_usage(tmp_path, 1_000, 10.0)
    assert complete and total >= 100 * 4096
    partial, complete = process._disk_usage(tmp_path, 30, 10.0)
    assert not complete and 0 < partial < total, "a lower bound"


@pytest.mark.slow
async def test_defect_07_start_caps_the_log_and_drops_stale_server_files(
    backend: ProcessBackend, instance: str
) -> None:
    handle = await backend.start(_spec(instance))
    await _ready(backend, instance, handle)
    await backend.stop(instance, handle)
    jupyter_runtime = backend.volume_dir(instance) / ".demanager" / "jupyter" / "runtime"
    stale = jupyter_runtime / "jpserver-424242.json"
    stale.write_text(json.dumps({"pid": 424242, "port": 1}))
    os.chown(stale, *(lambda s: (s.st_uid, s.st_gid))(jupyter_runtime.stat()))
    server_log = backend.runtime_dir(instance) / "server.log"
    with server_log.open("ab") as out:
        out.write(b"old line\n" * (process.LOG_MAX_BYTES // 9 + 1))
        out.write(b"the last words of the previous server\n")

    handle = await backend.start(_spec(instance))
    await _ready(backend, instance, handle)
    assert not stale.exists()
    assert [p.name for p in jupyter_runtime.glob("jpserver-*.json")] == [
        f"jpserver-{handle.pid}.json"
    ]
    kept = server_log.read_bytes()
    assert len(kept) < process.LOG_KEEP_BYTES + 1024 * 1024
    assert b"the last words of the previous server\n" in kept


# --- the flavor's CPU and memory limits ------------------------------------------------------

LIMITS_WORKLOAD = VISIBLE_CPUS + r'''
import subprocess
import sys
import time

root = sys.argv[1]
with open(os.path.join(root, "cpus.txt"), "w") as out:
    out.write(str(visible_cpus()))
# Touch every page, so the memory is really used (a bytearray of zeros would not be).
hog = subprocess.run([sys.executable, "-c", "x = b'1' * (512 << 20); print(len(x))"])
with open(os.path.join(root, "hog.txt"), "w") as out:
    out.write(str(hog.returncode))
time.sleep(3600)
'''


@pytest.mark.slow
async def test_a_workload_is_held_to_its_flavors_cpus_and_memory(
    backend: ProcessBackend, instance: str, data_dir: Path
) -> None:
    if "memory" not in backend._limits:
        pytest.skip("no writable memory cgroup controller here (needs root and a cgroup mount)")
    script = data_dir / "limits_workload.py"
    script.write_text(LIMITS_WORKLOAD)
    script.chmod(0o644)
    command = ["{python}", str(script), "{root_dir}"]
    profile = dataclasses.replace(_spec(instance).profile, launch={"process": {"command": command}})
    flavor = Flavor("test.1u256m", "CPU", {"CPU": 1, "GPU": 0, "memory": "256MiB"})
    spec = dataclasses.replace(_spec(instance), profile=profile, flavor=flavor)
    handle = await backend.start(spec)
    assert handle.memory_limit == 256 * 1024**2
    volume = backend.volume_dir(instance)
    deadline = time.monotonic() + 60
    while not (volume / "hog.txt").exists():
        log = backend.runtime_dir(instance) / "server.log"
        assert time.monotonic() < deadline, log.read_text()
        await asyncio.sleep(0.2)
    assert float((volume / "cpus.txt").read_text()) == 1.0
    assert (volume / "hog.txt").read_text() == "-9", "the kernel killed the 512 MiB child"
    observed = await backend.observe(instance, handle)
    assert observed.workload is not Workload.ABSENT, "the workload itself runs on"
    assert observed.warning is not None
    assert observed.warning.detail["cause"] == "oom_killed"
    assert "(256 MiB)" in observed.warning.message
    groups = [c.path(instance) for c in backend._limits.values()]
    await backend.stop(instance, handle)
    assert not any(group.exists() for group in groups), "stop removes every group"
    # A new launch counts only its own kills.
    calm = dataclasses.replace(
        profile, launch={"process": {"command": ["{python}", "-c", "import time; time.sleep(600)"]}}
    )
    handle = await backend.start(dataclasses.replace(spec, profile=calm))
    assert (await backend.observe(instance, handle)).warning is None


@pytest.mark.slow
async def test_without_a_cpu_controller_a_workload_is_pinned_to_its_cpus(
    backend: ProcessBackend, instance: str, data_dir: Path
) -> None:
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one CPU here: pinning to one cannot be told from not pinning")
    backend._limits.pop("cpu", None)  # as on a host where it is not writable
    script = data_dir / "cpus_workload.py"
    script.write_text(
        "import os, sys, time\n"
        "open(sys.argv[1] + '/cpus.txt', 'w').write(str(len(os.sched_getaffinity(0))))\n"
        "time.sleep(600)\n"
    )
    script.chmod(0o644)
    command = ["{python}", str(script), "{root_dir}"]
    profile = dataclasses.replace(_spec(instance).profile, launch={"process": {"command": command}})
    flavor = Flavor("test.1u", "CPU", {"CPU": 1, "GPU": 0, "memory": "1GiB"})
    spec = dataclasses.replace(_spec(instance), profile=profile, flavor=flavor)
    handle = await backend.start(spec)
    assert handle.cpus is not None and len(handle.cpus) == 1
    cpus = backend.volume_dir(instance) / "cpus.txt"
    deadline = time.monotonic() + 60
    while not cpus.exists():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.2)
    assert cpus.read_text() == "1"
    assert any("affinity" in problem for problem in await backend.check())


@pytest.mark.slow
async def test_a_workload_sees_only_its_assigned_gpus(
    backend: ProcessBackend, instance: str, data_dir: Path
) -> None:
    script = data_dir / "gpus_workload.py"
    script.write_text(
        "import os, sys, time\n"
        "seen = os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')\n"
        "open(sys.argv[1] + '/gpus.txt', 'w').write(seen)\n"
        "time.sleep(600)\n"
    )
    script.chmod(0o644)
    command = ["{python}", str(script), "{root_dir}"]
    # A profile cannot widen what the instance was given.
    launch = {"process": {"command": command, "env": {"CUDA_VISIBLE_DEVICES": "0,1,2,3"}}}
    profile = dataclasses.replace(_spec(instance).profile, launch=launch)
    seen = backend.volume_dir(instance) / "gpus.txt"
    for assigned, expected in [(("GPU-a", "GPU-b"), "GPU-a,GPU-b"), ((), ""),
                               (None, "0,1,2,3")]:
        seen.unlink(missing_ok=True)
        spec = dataclasses.replace(_spec(instance), profile=profile, gpus=assigned)
        handle = await backend.start(spec)
        deadline = time.monotonic() + 60
        while not seen.exists() or not seen.read_text():
            if expected == "" and seen.exists():
                break
            assert time.monotonic() < deadline, "the workload never wrote what it sees"
            await asyncio.sleep(0.2)
        assert seen.read_text() == expected, assigned
        environ = Path(f"/proc/{handle.pid}/environ").read_bytes().split(b"\0")
        assert f"CUDA_VISIBLE_DEVICES={expected}".encode() in environ
        await backend.stop(instance, handle)


# --- the zygote -------------------------------------------------------------------------

CONFINEMENT = ("Groups", "NoNewPrivs", "Umask", "Cpus_allowed_list", "Seccomp", "CapInh",
               "CapPrm", "CapEff", "CapBnd", "CapAmb")


def _confinement(backend: ProcessBackend, instance_id: str, pid: int) -> dict[str, Any]:
    """What confines the server process ``pid``, with the instance's own names made equal."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    status = dict(line.split(":\t", 1) for line in lines if ":\t" in line)
    uids, gids = status["Uid"].split(), status["Gid"].split()
    seen: dict[str, Any] = {key: status.get(key, "").strip() for key in CONFINEMENT}
    seen["one uid"], seen["one gid"] = len(set(uids)) == 1, len(set(gids)) == 1
    if os.geteuid() == 0:
        import pwd

        account = pwd.getpwnam(sandbox.user_name(instance_id))
        seen["the instance's uid"] = int(uids[0]) == account.pw_uid
        seen["the instance's gid"] = int(gids[0]) == account.pw_gid
    seen["cgroups"] = Path(f"/proc/{pid}/cgroup").read_text().replace(instance_id, "ID")
    seen["in its volume"] = os.readlink(f"/proc/{pid}/cwd") == str(backend.volume_dir(instance_id))
    seen["a session of its own"] = os.getsid(pid) == pid
    log = str(backend.runtime_dir(instance_id) / "server.log")
    seen["streams"] = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in (0, 1, 2)] == [
        os.devnull, log, log
    ]
    return seen


@pytest.mark.slow
async def test_a_forked_server_is_confined_exactly_like_a_plain_one(data_dir: Path) -> None:
    seen = {}
    for zygote in (True, False):
        options = ProcessOptions(notebook_python=notebook_python(), zygote=zygote)
        built = await asyncio.to_thread(ProcessBackend, options, BackendContext(data_dir=data_dir))
        instance_id = uuid.uuid4().hex
        try:
            handle = await built.start(_spec(instance_id))
            await _ready(built, instance_id, handle)
            seen[zygote] = _confinement(built, instance_id, handle.pid)
            parent = psutil.Process(handle.pid).ppid()
            assert parent == (built._zygote.pid if built._zygote else os.getpid())
            await built.stop(instance_id, handle)
            assert (await built.observe(instance_id, handle)).workload is Workload.ABSENT
        finally:
            await built.delete(instance_id, None, Storage("evs"))
            await built.close()
    assert seen[True] == seen[False]
    assert all(value for value in seen[True].values() if isinstance(value, bool))
