"""``demanager storage``: what each command prints, its exit codes, and that the secret
key is taken only at a hidden prompt or from standard input and never shown."""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from demanager.cli.main import app
from tests.server import traversable_dir

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY"
STAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ")


@pytest.fixture
def data_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    base = traversable_dir("demanager-storage-")
    monkeypatch.setenv("DEMANAGER_DATA_DIR", str(base / "data"))
    monkeypatch.delenv("DEMANAGER_SECRET_KEY", raising=False)
    yield base / "data"
    shutil.rmtree(base, ignore_errors=True)


def _run(*args: str, given: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["storage", *args], input=given)
    return result.exit_code, STAMP.sub("<when>", result.output.strip())


def test_keys_grants_and_list(data_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    assert _run("list") == (0, "")
    code, shown = _run("keys", "set", "team-a", "--access-key-id", "AKTEAMA",
                       given=f"{SECRET}\n{SECRET}\n")
    assert code == 0
    assert shown.splitlines()[-1] == "project team-a: access key AKTEAMA set"
    assert _run("keys", "set", "team-b", "--access-key-id", "AKTEAMB",
                "--secret-access-key-stdin", given=f"{SECRET}\n") == (
        0, "project team-b: access key AKTEAMB set")
    assert _run("grant", "data.team-a", "team-a") == (
        0, "granted bucket data.team-a to project team-a")
    assert _run("grant", "data.team-a", "team-a") == (
        0, "bucket data.team-a was already granted to project team-a")
    assert _run("grant", "shared", "team-b") == (0, "granted bucket shared to project team-b")
    code, listed = _run("list")
    assert (code, listed) == (0, "\n".join([
        "PROJECT\tACCESS KEY ID\tSECRET\tUPDATED",
        "team-a\tAKTEAMA\tset\t<when>",
        "team-b\tAKTEAMB\tset\t<when>",
        "",
        "BUCKET\tPROJECT\tGRANTED",
        "data.team-a\tteam-a\t<when>",
        "shared\tteam-b\t<when>",
    ]))
    assert SECRET not in shown + listed + caplog.text

    assert _run("keys", "clear", "team-a") == (0, "project team-a: keys cleared")
    assert _run("keys", "clear", "team-a") == (0, "project team-a had no keys")
    assert _run("revoke", "data.team-a") == (0, "revoked bucket data.team-a from project team-a")
    assert _run("revoke", "data.team-a") == (0, "bucket data.team-a was not granted")
    assert _run("list") == (0, "\n".join([
        "PROJECT\tACCESS KEY ID\tSECRET\tUPDATED",
        "team-b\tAKTEAMB\tset\t<when>",
        "",
        "BUCKET\tPROJECT\tGRANTED",
        "shared\tteam-b\t<when>",
    ]))
    assert SECRET.encode() not in b"".join(f.read_bytes() for f in data_dir.glob("*.db*"))


def test_a_bucket_of_another_project_moves_only_when_asked(data_dir: Path) -> None:
    _run("grant", "shared", "team-a")
    assert _run("grant", "shared", "team-b") == (
        1, "error: The bucket 'shared' is granted to project 'team-a'; move it with --move.")
    assert _run("grant", "shared", "team-b", "--move") == (
        0, "moved bucket shared from project team-a to project team-b")


def test_keys_set_under_another_server_key_show_as_unreadable(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _run("keys", "set", "team-a", "--access-key-id", "AK", "--secret-access-key-stdin",
         given=f"{SECRET}\n")
    monkeypatch.setenv("DEMANAGER_SECRET_KEY", "a different key")
    assert _run("list") == (0, "\n".join([
        "PROJECT\tACCESS KEY ID\tSECRET\tUPDATED",
        "team-a\tAK\tunreadable (server key changed: set again)\t<when>",
    ]))


@pytest.mark.parametrize(
    ("args", "given"),
    [
        (["keys", "set", "team-a", "--access-key-id", "AK", "--secret-access-key", SECRET],
         None),
        (["keys", "set", "team-a", "--secret-access-key-stdin"], f"{SECRET}\n"),
        (["keys", "set", "team-a", "--access-key-id", "AK", "--secret-access-key-stdin"], "\n"),
        (["keys", "set", "team-a", "--access-key-id", "AK", "--secret-access-key-stdin"],
         "two words\n"),
        (["keys", "set", "team-a", "--access-key-id", "A K", "--secret-access-key-stdin"],
         f"{SECRET}\n"),
        (["keys", "set", "x" * 65, "--access-key-id", "AK", "--secret-access-key-stdin"],
         f"{SECRET}\n"),
        (["grant", "Not_A_Bucket", "team-a"], None),
        (["grant", "ab", "team-a"], None),
        (["grant", "shared", ""], None),
        (["revoke", "-shared"], None),
    ],
)
def test_wrong_usage_exits_2_and_changes_nothing(
    data_dir: Path, args: list[str], given: str | None
) -> None:
    code, shown = _run(*args, given=given)
    assert code == 2
    assert SECRET not in shown
    assert _run("list") == (0, "")


def test_a_secret_typed_differently_twice_is_asked_again(data_dir: Path) -> None:
    code, shown = _run("keys", "set", "team-a", "--access-key-id", "AK",
                       given=f"{SECRET}\nnot the same\n")
    assert code == 1 and "do not match" in shown and SECRET not in shown
    assert _run("list") == (0, "")
