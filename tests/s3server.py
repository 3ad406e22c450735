"""A real S3 server for tests and benchmarks: moto in server mode on loopback, started
as a child process and stopped by its handle. Requests to it are real HTTP, signed
with the key of an IAM user the server's first requests create."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

#: Requests the server serves before it checks signatures: the three that create the
#: IAM user and its key. Every request after them must be signed with that key.
UNSIGNED_SETUP_REQUESTS = 3
LOOPBACK = "127.0.0.1,localhost"


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    pid: int


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def moto_server() -> Iterator[S3Server]:
    """A moto server with one IAM user allowed all of S3; stopped on exit."""
    port = _free_port()
    env = {
        **os.environ,
        "NO_PROXY": LOOPBACK,
        "no_proxy": LOOPBACK,
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
        access_key, secret_key = _create_user(endpoint)
        yield S3Server(endpoint, access_key, secret_key, server.pid)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _create_user(endpoint: str) -> tuple[str, str]:
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
    return key["AccessKeyId"], key["SecretAccessKey"]
