"""A real S3 server for the object-storage tests: moto in server mode on loopback,
started as a child process and stopped by its handle. Requests to it are real HTTP,
signed with the test's keys."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest

from demanager.objectstore.client import ObjectStore
from demanager.objectstore.options import S3Options

#: Requests the server serves before it checks signatures: the three that create the
#: test's IAM user and its key. Every request after them must be signed with that key.
UNSIGNED_SETUP_REQUESTS = 3
KEYS: dict[str, str] = {}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    port = _free_port()
    env = {
        **os.environ,
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        "INITIAL_NO_AUTH_ACTION_COUNT": str(UNSIGNED_SETUP_REQUESTS),
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the moto S3 server did not start") from None
                time.sleep(0.1)
        endpoint = f"http://127.0.0.1:{port}"
        KEYS.update(_create_user(endpoint))
        yield endpoint
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _create_user(endpoint: str) -> dict[str, str]:
    """An IAM user allowed all of S3, and its access key (the server's first requests)."""
    import boto3

    iam = boto3.client(
        "iam", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id="setup", aws_secret_access_key="setup",
    )
    iam.create_user(UserName="demanager")
    iam.put_user_policy(
        UserName="demanager",
        PolicyName="s3",
        PolicyDocument=(
            '{"Version": "2012-10-17", "Statement": '
            '[{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}'
        ),
    )
    key = iam.create_access_key(UserName="demanager")["AccessKey"]
    return {"access_key": key["AccessKeyId"], "secret_key": key["SecretAccessKey"]}


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
