"""Where the SDK finds its settings, and how ``save_config`` protects the token."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from demanager.client import Client, ClientConfig, ConfigurationError, save_config
from demanager.client._config import default_config_path, load_config_file


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in (
        "DEMANAGER_URL",
        "DEMANAGER_TOKEN",
        "DEMANAGER_PROJECT",
        "XDG_CONFIG_HOME",
    ):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "cfg" / "config.json"
    monkeypatch.setenv("DEMANAGER_CONFIG", str(path))
    return path


def test_arguments_win_over_env_and_file(monkeypatch: pytest.MonkeyPatch, clean_env: Path) -> None:
    save_config(ClientConfig(url="http://file:1", project="pfile", token="tfile"))
    monkeypatch.setenv("DEMANAGER_URL", "http://env:2")
    monkeypatch.setenv("DEMANAGER_TOKEN", "tenv")
    config = ClientConfig.resolve(url="http://arg:3")
    assert config == ClientConfig(url="http://arg:3", project="pfile", token="tenv")


def test_file_fills_what_is_missing(clean_env: Path) -> None:
    save_config(ClientConfig(url="http://file:1", project="p", token="t"))
    assert ClientConfig.resolve() == ClientConfig(url="http://file:1", project="p", token="t")


def test_missing_settings_name_what_is_missing() -> None:
    with pytest.raises(ConfigurationError, match="not logged in: no project, token"):
        ClientConfig.resolve(url="http://x:1")


def test_client_without_settings_raises_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        Client()


def test_url_needs_a_scheme() -> None:
    with pytest.raises(ConfigurationError, match="http:// or https://"):
        ClientConfig.resolve(url="localhost:8000", project="p", token="t")


def test_saved_file_is_owner_only(clean_env: Path) -> None:
    written = save_config(ClientConfig(url="http://h:1", project="p", token="secret"))
    assert written == clean_env
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    assert stat.S_IMODE(written.parent.stat().st_mode) == 0o700
    assert json.loads(written.read_text()) == {
        "url": "http://h:1",
        "project": "p",
        "token": "secret",
    }


def test_saving_over_a_readable_file_makes_it_owner_only(clean_env: Path) -> None:
    clean_env.parent.mkdir(parents=True)
    clean_env.write_text("{}")
    clean_env.chmod(0o644)
    save_config(ClientConfig(url="http://h:1", project="p", token="t"))
    assert stat.S_IMODE(clean_env.stat().st_mode) == 0o600
    assert not [p for p in clean_env.parent.iterdir() if p.name.startswith(".config-")]


def test_default_path_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("DEMANAGER_CONFIG")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert default_config_path() == tmp_path / "demanager" / "config.json"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_config_path() == tmp_path / ".config" / "demanager" / "config.json"


def test_broken_file_is_a_configuration_error(clean_env: Path) -> None:
    clean_env.parent.mkdir(parents=True)
    clean_env.write_text("not json")
    with pytest.raises(ConfigurationError, match="not valid JSON"):
        load_config_file()


def test_no_file_means_no_settings() -> None:
    assert load_config_file() == {}


def test_repr_hides_the_token() -> None:
    config = ClientConfig(url="http://h:1", project="p", token="very-secret")
    assert "very-secret" not in repr(config)
    with Client("http://h:1", project="p", token="very-secret") as dm:
        assert "very-secret" not in repr(dm)
