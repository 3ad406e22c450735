"""A real S3 server for the object-storage tests (``tests/s3server.py``: moto on
loopback, one per session); requests to it are real HTTP, signed with the test's keys."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from demanager.objectstore.client import ObjectStore
from demanager.objectstore.options import S3Options
from tests.s3server import moto_server

KEYS: dict[str, str] = {}


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    with moto_server() as server:
        KEYS.update(access_key=server.access_key, secret_key=server.secret_key)
        yield server.endpoint


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
def bucket(store: ObjectStore, s3_endpoint: str) -> str:
    """A fresh bucket per test (moto keeps state for the whole session)."""
    import boto3

    name = f"b-{uuid.uuid4().hex[:12]}"
    boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id=KEYS["access_key"],
        aws_secret_access_key=KEYS["secret_key"],
    ).create_bucket(Bucket=name)
    return name
