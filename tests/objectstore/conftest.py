"""A real S3 server for the object-storage tests: moto in server mode on loopback,
started as a child process and stopped by its handle. Requests to it are real HTTP,
signed with the test's keys."""

from __future__ import annotations

import os

import pytest

from demanager.objectstore.client import ObjectStore
from demanager.objectstore.options import S3Options
from tests.s3server import MotoServer


@pytest.fixture(scope="session", autouse=True)
def _keys(moto: MotoServer) -> None:
    """The test user's keys, for ``options`` and ``KEYS``, whichever test runs first."""
    KEYS.update(access_key=moto.access_key, secret_key=moto.secret_key)


@pytest.fixture(scope="session")
def s3_endpoint(moto: MotoServer) -> str:
    return moto.endpoint


KEYS: dict[str, str] = {}


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    # Keep boto away from any proxy and any credentials of the host.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def options(endpoint: str, secret: str | None = None) -> S3Options:
    return S3Options.model_validate(
        {
            "endpoint_url": endpoint,
            "access_key_id": KEYS["access_key"],
            "secret_access_key": secret or KEYS["secret_key"],
            "addressing_style": "path",
        }
    )


@pytest.fixture
def store(s3_endpoint: str) -> ObjectStore:
    return ObjectStore(options(s3_endpoint))


@pytest.fixture
def bucket(moto: MotoServer) -> str:
    """A fresh bucket per test (moto keeps state for the whole session)."""
    return moto.new_bucket()
