"""The S3 settings section: read from the environment, the secret kept out of sight."""

from __future__ import annotations

from pathlib import Path

import pytest

from demanager.objectstore.options import S3Options
from demanager.settings import Settings

SECRET = "very-secret-sk"


def test_s3_section_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMANAGER_S3__ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("DEMANAGER_S3__ACCESS_KEY_ID", "ak")
    monkeypatch.setenv("DEMANAGER_S3__SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("DEMANAGER_S3__ADDRESSING_STYLE", "virtual")
    settings = Settings()
    assert settings.s3.endpoint_url == "http://127.0.0.1:9000"
    assert settings.s3.addressing_style == "virtual"
    assert settings.s3.has_credentials
    assert settings.object_storage
    # Neither the repr (what a log line of the settings would show) nor a JSON dump
    # carries the secret.
    assert SECRET not in repr(settings)
    assert SECRET not in settings.model_dump_json()


def test_an_endpoint_without_a_key_still_serves_object_storage(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Keys are looked for per project at create (a project's own, or 6319).
    monkeypatch.setenv("DEMANAGER_S3__ENDPOINT_URL", "http://127.0.0.1:9000")
    assert Settings().object_storage


def test_the_folder_stand_in_serves_object_storage(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    monkeypatch.setenv("DEMANAGER_OBJECT_STORAGE_ROOT", str(tmp_path))
    assert Settings().object_storage


def test_nothing_configured_serves_no_object_storage() -> None:
    assert not Settings().object_storage


def test_an_unknown_s3_setting_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMANAGER_S3__BUCKETT", "x")
    with pytest.raises(ValueError, match="buckett"):
        Settings()


def test_every_s3_setting_is_documented() -> None:
    docs = Path(__file__).parents[2] / "docs" / "reference" / "configuration.md"
    text = docs.read_text(encoding="utf-8")
    names = [f"`DEMANAGER_S3__{field.upper()}`" for field in S3Options.model_fields]
    assert [name for name in names if name not in text] == []
