"""Where the host's CPUs, memory and GPUs come from: settings, cgroups, nvidia-smi."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from pydantic import ValidationError

from demanager.backends import inventory
from demanager.backends.options import ProcessOptions
from demanager.engine.runtime import host_inventory
from demanager.settings import Settings

NVIDIA_SMI = """\
1, GPU-6b4b8f2e-0d1a-4b59-9f3c-2a1d7e8c9b01
0, GPU-0c1d2e3f-4a5b-6c7d-8e9f-a0b1c2d3e4f5
"""


def test_gpu_setting() -> None:
    assert inventory.parse_gpu_list("auto") is None
    assert inventory.parse_gpu_list(" AUTO ") is None
    assert inventory.parse_gpu_list("none") == ()
    assert inventory.parse_gpu_list("") == ()
    assert inventory.parse_gpu_list("0, 1") == ("0", "1")
    assert inventory.parse_gpu_list("GPU-6b4b8f2e-0d1a") == ("GPU-6b4b8f2e-0d1a",)
    with pytest.raises(ValueError, match="twice"):
        inventory.parse_gpu_list("0,0")
    with pytest.raises(ValueError, match="not a GPU id"):
        inventory.parse_gpu_list("0,,1")
    with pytest.raises(ValidationError, match="not a GPU id"):
        Settings(gpus="0;1")


def test_nvidia_smi_output_gives_uuids_in_index_order() -> None:
    assert inventory.parse_nvidia_smi(NVIDIA_SMI) == (
        "GPU-0c1d2e3f-4a5b-6c7d-8e9f-a0b1c2d3e4f5",
        "GPU-6b4b8f2e-0d1a-4b59-9f3c-2a1d7e8c9b01",
    )
    assert inventory.parse_nvidia_smi("") == ()
    # What it prints when the driver is not loaded: no GPU, not a crash.
    failed = "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."
    assert inventory.parse_nvidia_smi(failed) == ()


def test_cgroup_files_parse() -> None:
    assert inventory.parse_cpu_max("200000 100000\n") == 2.0
    assert inventory.parse_cpu_max("150000 100000") == 1.5
    assert inventory.parse_cpu_max("max 100000\n") is None
    assert inventory.parse_cpu_max("") is None
    assert inventory.parse_memory_max("1073741824\n") == 2**30
    assert inventory.parse_memory_max("max\n") is None
    assert inventory.parse_meminfo("MemTotal:       24568084 kB\nMemFree: 1 kB\n") == (
        24568084 * 1024
    )
    assert inventory.own_cgroup("12:cpu:/x\n0::/system.slice/demanager.service\n") == (
        "/system.slice/demanager.service"
    )
    assert inventory.own_cgroup("0::/\n") == "/"
    assert inventory.own_cgroup("4:memory:/x\n") is None


def test_the_tightest_cgroup_limit_wins(tmp_path: Path) -> None:
    leaf = tmp_path / "system.slice" / "demanager.service"
    leaf.mkdir(parents=True)
    (leaf / "cpu.max").write_text("50000 100000\n")
    (tmp_path / "cpu.max").write_text("max 100000\n")
    (leaf / "memory.max").write_text("max\n")
    (leaf.parent / "memory.max").write_text(f"{2**29}\n")
    own = "/system.slice/demanager.service"
    assert inventory.detect_cpus(tmp_path, own) == 0.5
    assert inventory.detect_memory(tmp_path, own) == 2**29


def test_detection_without_cgroup_limits_reads_the_host(tmp_path: Path) -> None:
    assert inventory.detect_cpus(tmp_path) == len(os.sched_getaffinity(0))
    meminfo = inventory.parse_meminfo(Path("/proc/meminfo").read_text())
    assert inventory.detect_memory(tmp_path) == meminfo


def _fake_nvidia_smi(folder: Path, script: str) -> None:
    binary = folder / "nvidia-smi"
    binary.write_text(script)
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)


def test_gpus_are_detected_with_nvidia_smi_on_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert inventory.detect_gpus() == (), "no nvidia-smi: no GPU"
    args = tmp_path / "args"
    _fake_nvidia_smi(
        tmp_path, f"#!/bin/sh\necho \"$@\" > {args}\ncat <<'END'\n{NVIDIA_SMI}END\n"
    )
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")  # ours first
    assert inventory.detect_gpus() == inventory.parse_nvidia_smi(NVIDIA_SMI)
    assert args.read_text().split() == list(inventory.NVIDIA_SMI_QUERY)
    _fake_nvidia_smi(tmp_path, "#!/bin/sh\necho 'driver not loaded' >&2\nexit 9\n")
    assert inventory.detect_gpus() == (), "a failing nvidia-smi: no GPU"


def test_the_process_backend_counts_declared_values_over_detected_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    _fake_nvidia_smi(tmp_path, f"#!/bin/sh\ncat <<'END'\n{NVIDIA_SMI}END\n")
    detected = host_inventory(Settings(node_id="n1"), "process")
    assert detected is not None
    assert detected.host == "n1"
    assert detected.cpus == inventory.detect_cpus()
    assert detected.memory_bytes == inventory.detect_memory()
    assert detected.gpus == inventory.parse_nvidia_smi(NVIDIA_SMI)
    declared = host_inventory(
        Settings(
            node_id="n1",
            gpus="0,1",
            process=ProcessOptions(cpus=3, memory="2GiB", cpu_overcommit=2),  # type: ignore[arg-type]
        ),
        "process",
    )
    assert declared is not None
    assert (declared.cpus, declared.memory_bytes, declared.gpus) == (3, 2**30 * 2, ("0", "1"))
    assert declared.limits()["cpus"] == 6000


def test_other_backends_assign_listed_gpus_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    assert host_inventory(Settings(), "docker") is None, "auto: the daemon may be elsewhere"
    docker = host_inventory(Settings(gpus="0,1"), "docker")
    assert docker is not None and docker.gpus == ("0", "1") and docker.cpus is None
    assert docker.host == "docker:local"
    assert host_inventory(Settings(gpus="0"), "kubernetes") is None, "the cluster schedules"
    fake = host_inventory(Settings(gpus="none"), "fake")
    assert fake is not None and fake.gpus == ()


def test_process_memory_setting_takes_sizes() -> None:
    assert ProcessOptions(memory="512MiB").memory == 2**29  # type: ignore[arg-type]
    assert ProcessOptions(memory=1000).memory == 1000
    with pytest.raises(ValidationError):
        ProcessOptions(memory="lots")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        ProcessOptions(cpu_overcommit=0)
