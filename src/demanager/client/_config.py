"""Where the SDK finds its server, token and project.

Each of the three values is looked up on its own, first hit wins:

1. the argument given to ``Client(...)``;
2. the environment: ``DEMANAGER_URL``, ``DEMANAGER_TOKEN``, ``DEMANAGER_PROJECT``;
3. the user config file written by ``demanager login``:
   ``$DEMANAGER_CONFIG``, else ``$XDG_CONFIG_HOME/demanager/config.json``,
   else ``~/.config/demanager/config.json``.

Looking each value up separately lets a user keep the token in the file while
pointing one shell at another server with ``DEMANAGER_URL``. The file holds a
secret, so it is written owner-only (0600) and replaced atomically.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from demanager.client.exceptions import ConfigurationError

__all__ = ["ClientConfig", "default_config_path", "load_config_file", "save_config"]

ENV_URL = "DEMANAGER_URL"
ENV_TOKEN = "DEMANAGER_TOKEN"
ENV_PROJECT = "DEMANAGER_PROJECT"
ENV_CONFIG = "DEMANAGER_CONFIG"


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """A complete set of connection settings."""

    url: str
    project: str
    token: str

    def __repr__(self) -> str:
        # Never let a token end up in a log line or a traceback.
        return f"ClientConfig(url={self.url!r}, project={self.project!r}, token='***')"

    @classmethod
    def resolve(
        cls,
        *,
        url: str | None = None,
        project: str | None = None,
        token: str | None = None,
        config_path: Path | str | None = None,
    ) -> ClientConfig:
        """Fill each missing value from the environment, then from the config file."""
        stored: dict[str, str] | None = None

        def pick(given: str | None, env: str, key: str) -> str | None:
            nonlocal stored
            if given:
                return given
            if os.environ.get(env):
                return os.environ[env]
            if stored is None:
                stored = load_config_file(config_path)
            return stored.get(key) or None

        found = {
            "url": pick(url, ENV_URL, "url"),
            "project": pick(project, ENV_PROJECT, "project"),
            "token": pick(token, ENV_TOKEN, "token"),
        }
        missing = [key for key, value in found.items() if not value]
        if missing:
            raise ConfigurationError(
                f"not logged in: no {', '.join(missing)} configured; run `demanager login`, "
                f"set {', '.join('DEMANAGER_' + key.upper() for key in missing)} "
                "or pass them explicitly"
            )
        config = cls(
            url=str(found["url"]),
            project=str(found["project"]),
            token=str(found["token"]),
        )
        config.check()
        return config

    def check(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ConfigurationError(f"server URL {self.url!r} must start with http:// or https://")


def default_config_path() -> Path:
    explicit = os.environ.get(ENV_CONFIG)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "demanager" / "config.json"


def load_config_file(path: Path | str | None = None) -> dict[str, str]:
    """The stored settings, or ``{}`` when there is no file yet."""
    file = Path(path) if path is not None else default_config_path()
    try:
        raw = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigurationError(f"cannot read {file}: {exc.strerror}") from exc
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ConfigurationError(f"{file} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigurationError(f"{file} must hold a JSON object")
    return {key: value for key, value in data.items() if isinstance(value, str)}


def save_config(config: ClientConfig, path: Path | str | None = None) -> Path:
    """Write ``config`` owner-only; returns the path written."""
    config.check()
    file = Path(path) if path is not None else default_config_path()
    file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    payload = json.dumps(
        {"url": config.url, "project": config.project, "token": config.token}, indent=2
    )
    # mkstemp creates the file 0600 from the first byte, so the token is never
    # readable by others, not even between the write and a later chmod.
    fd, tmp = tempfile.mkstemp(prefix=".config-", suffix=".json", dir=file.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(payload + "\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, file)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return file
