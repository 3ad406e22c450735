"""The docs state facts the code owns; these tests keep them from drifting apart.

Regenerate the lifecycle tables and the CLI reference with
``.venv/bin/python -m tests.unit.test_docs``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from demanager.domain.lifecycle import CALLER_TABLE, TRANSITIONS, InstanceStatus, Operation
from demanager.settings import BUILT_IN_SECTIONS, Settings

DOCS = Path(__file__).resolve().parents[2] / "docs"
LIFECYCLE = DOCS / "explanation" / "lifecycle.md"
CLI = DOCS / "reference" / "cli.md"
CLI_GENERATED = "### `demanager`\n"
"""Where the generated part of the CLI reference begins."""
BEGIN, END = "<!-- generated:begin -->", "<!-- generated:end -->"


def render() -> str:
    ops = list(Operation)
    lines = ["### Caller-driven (contract §4.3)", "",
             "| status | " + " | ".join(o.value for o in ops) + " |",
             "| --- |" + " --- |" * len(ops)]
    for status in InstanceStatus:
        if status is InstanceStatus.DELETED:
            continue
        cells = []
        for op in ops:
            outcome = CALLER_TABLE[(status, op)]
            if outcome is None:
                cells.append("allowed")
            elif isinstance(outcome, InstanceStatus):
                cells.append(f"→ `{outcome.value}`")
            else:
                cells.append(outcome.__name__)
        lines.append(f"| `{status.value}` | " + " | ".join(cells) + " |")
    lines += ["", "### Every legal status write", "", "| from | to |", "| --- | --- |"]
    for status, targets in TRANSITIONS.items():
        shown = ", ".join(f"`{t.value}`" for t in sorted(targets)) or "—"
        lines.append(f"| `{status.value}` | {shown} |")
    return "\n".join(lines)


def _generated(text: str) -> str:
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip()


def test_lifecycle_doc_matches_the_tables() -> None:
    assert _generated(LIFECYCLE.read_text(encoding="utf-8")) == render()


def test_every_setting_is_documented() -> None:
    text = (DOCS / "reference" / "configuration.md").read_text(encoding="utf-8")
    missing = [n for n in Settings.model_fields if f"DEMANAGER_{n.upper()}" not in text]
    assert missing == []


def test_every_backend_setting_is_documented() -> None:
    text = (DOCS / "reference" / "configuration.md").read_text(encoding="utf-8")
    names = [
        f"DEMANAGER_{section.upper()}__{field.upper()}"
        for section in BUILT_IN_SECTIONS
        for field in type(getattr(Settings(), section)).model_fields
    ]
    assert [name for name in names if f"`{name}`" not in text] == []


def render_cli(tmp: Path) -> str:
    """typer's docs of the command, headings shifted two levels down."""
    out = tmp / "commands.md"
    typer = Path(sys.executable).with_name("typer")
    subprocess.run([str(typer), "demanager.cli.main", "utils", "docs", "--name", "demanager",
                    "--output", str(out)], check=True, capture_output=True, timeout=120)
    text = out.read_text(encoding="utf-8")
    return re.sub(r"^(#+) ", lambda m: f"##{m.group(1)} ", text, flags=re.M).lstrip()


def test_cli_reference_matches_the_commands(tmp_path: Path) -> None:
    text = CLI.read_text(encoding="utf-8")
    assert text.split(CLI_GENERATED, 1)[1] == render_cli(tmp_path).split(CLI_GENERATED, 1)[1]


if __name__ == "__main__":
    import tempfile

    cli_text = CLI.read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory() as scratch:
        CLI.write_text(cli_text.split(CLI_GENERATED, 1)[0] + render_cli(Path(scratch)), "utf-8")
    text = LIFECYCLE.read_text(encoding="utf-8")
    head, rest = text.split(BEGIN, 1)
    LIFECYCLE.write_text(f"{head}{BEGIN}\n{render()}\n{END}{rest.split(END, 1)[1]}", "utf-8")
