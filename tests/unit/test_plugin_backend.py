"""A third-party backend is a separate package: found through the ``demanager.backends``
entry points, given its own settings section, and held to its own models."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PLUGIN = '''
from demanager.backends.base import Options
from demanager.backends.fake import FakeBackend


class DemoOptions(Options):
    greeting: str
    repeat: int = 1


class DemoBackend(FakeBackend):
    name = "demo"
    options_type = DemoOptions

    def __init__(self, options, context):
        from demanager.backends.options import FakeOptions

        super().__init__(FakeOptions(), context)
        self.options = options

    async def check(self):
        return [" ".join([self.options.greeting] * self.options.repeat)]
'''


@pytest.fixture
def plugin(tmp_path: Path) -> dict[str, str]:
    """A package installed as a distribution would be: a module plus its dist-info."""
    site = tmp_path / "site"
    (site / "demo_backend-0.1.dist-info").mkdir(parents=True)
    (site / "demo_backend.py").write_text(textwrap.dedent(PLUGIN), encoding="utf-8")
    (site / "demo_backend-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: demo-backend\nVersion: 0.1\n", encoding="utf-8"
    )
    (site / "demo_backend-0.1.dist-info" / "entry_points.txt").write_text(
        "[demanager.backends]\ndemo = demo_backend:DemoBackend\n", encoding="utf-8"
    )
    return {**os.environ, "PYTHONPATH": str(site), "DEMANAGER_DATA_DIR": str(tmp_path / "d")}


def _doctor(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "demanager.cli.main", "doctor", "--backend", "demo", *args],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )


def test_a_plugin_backend_reads_its_own_section_from_the_environment(
    plugin: dict[str, str],
) -> None:
    done = _doctor({**plugin, "DEMANAGER_DEMO__GREETING": "hello", "DEMANAGER_DEMO__REPEAT": "2"})
    assert "backend demo: hello hello" in done.stdout, done.stdout + done.stderr


def test_a_plugin_backend_reads_its_section_from_the_config_file(
    plugin: dict[str, str], tmp_path: Path
) -> None:
    config = tmp_path / "demanager.yaml"
    config.write_text("demo:\n  greeting: bonjour\n", encoding="utf-8")
    done = _doctor({**plugin, "DEMANAGER_CONFIG_FILE": str(config)})
    assert "backend demo: bonjour" in done.stdout, done.stdout + done.stderr


def test_a_plugin_backend_refuses_a_bad_section(plugin: dict[str, str]) -> None:
    done = _doctor(plugin)  # greeting is required
    assert done.returncode == 1
    assert "settings of the demo backend (DEMANAGER_DEMO__…)" in done.stdout
    assert "greeting" in done.stdout
