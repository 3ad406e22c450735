"""The notebook image carries the sync agent as a handful of demanager's modules beside
boto3 and pydantic (images/notebook/agent-modules.txt): those modules alone must be
enough to run it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LISTED = ROOT / "images" / "notebook" / "agent-modules.txt"


def test_the_listed_modules_run_the_agent(tmp_path: Path) -> None:
    modules = [line.strip() for line in LISTED.read_text(encoding="utf-8").splitlines()
               if line.strip() and not line.startswith("#")]
    for module in modules:
        target = tmp_path / "demanager" / module
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / "src" / "demanager" / module, target)
    # The copies come first on the path, so any module missing from the list fails the
    # import instead of being found in the repository.
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]); "
        "import demanager.objectstore.agent as agent; "
        "assert agent.__file__.startswith(sys.argv[1]), agent.__file__; "
        "loaded = [m.__file__ for n, m in sys.modules.items() if n.startswith('demanager')]; "
        "assert all(f.startswith(sys.argv[1]) for f in loaded), loaded"
    )
    done = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    helped = subprocess.run(
        [sys.executable, "-c", "import sys, runpy; sys.path.insert(0, sys.argv[1]); "
         "sys.argv = ['agent', '--help']; runpy.run_module('demanager.objectstore.agent', "
         "run_name='__main__')", str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=False)
    assert helped.returncode == 0 and "down" in helped.stdout, helped.stderr
