"""The upstream credential never crosses the proxy, however the body is chunked."""

from __future__ import annotations

import pytest

from demanager.proxy.scrub import Scrubber, secrets_of

SECRET = b"3c967d367a7182332f91dc18f8760572"
BODY = b'<script>{"token": "' + SECRET + b'", "x": 1}</script>' + SECRET + b"end" + SECRET


def run(chunks: list[bytes]) -> bytes:
    scrubber = Scrubber([SECRET])
    return b"".join(scrubber.feed(c) for c in chunks) + scrubber.flush()


@pytest.mark.parametrize("size", [1, 2, 5, 31, 32, 33, 64, 1000])
def test_every_split_is_masked_and_the_length_kept(size: int) -> None:
    out = run([BODY[i : i + size] for i in range(0, len(BODY), size)])
    assert SECRET not in out
    assert len(out) == len(BODY)
    assert out == BODY.replace(SECRET, b"*" * len(SECRET))


def test_bodies_without_the_secret_pass_unchanged() -> None:
    body = bytes(range(256)) * 100
    assert run([body[:7], body[7:300], body[300:]]) == body


def test_secrets_come_from_the_upstream_headers() -> None:
    assert secrets_of({"Authorization": f"token {SECRET.decode()}"}) == [SECRET]
    assert secrets_of({"X-Short": "token abc"}) == []
