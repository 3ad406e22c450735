"""What the proxy lets through, as pure functions: the upstream credential never
crosses back, however the body is chunked; the notebook cannot set the session
cookie; the caller's credential parameter never goes upstream; sign-in never
redirects off site."""

from __future__ import annotations

import pytest

from demanager.proxy.forwarding import response_headers, split_query
from demanager.proxy.scrub import Scrubber, secrets_of
from demanager.proxy.signin import safe_next

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


def test_the_notebook_cannot_set_the_session_cookie() -> None:
    raw = [(b"set-cookie", b"demanager-notebook=forged; Path=/notebooks/other/"),
           (b"Set-Cookie", b"_xsrf=abc; Path=/notebooks/x/"), (b"connection", b"close")]
    assert response_headers(raw) == [(b"Set-Cookie", b"_xsrf=abc; Path=/notebooks/x/")]


def test_the_token_parameter_is_taken_out_and_the_rest_kept_byte_for_byte() -> None:
    assert split_query(b"a=%2F&token=dmg_x&b=&token=second&Token=keep") == (
        "dmg_x", b"a=%2F&b=&Token=keep"
    )
    assert split_query(b"t%6Fken=dmg_y") == ("dmg_y", b"")
    assert split_query(b"") == (None, b"")


@pytest.mark.parametrize("target", ["//evil.example/", "https://evil.example/x", "/console",
                                    "/notebooks/x", "/notebooks/x/\\evil", "/notebooks//x/",
                                    "/notebooks/x/a b", "/notebooks/x/#frag"])
def test_sign_in_goes_back_only_under_notebooks(target: str) -> None:
    assert safe_next(target) == ""


def test_a_notebook_path_is_a_fine_next() -> None:
    assert safe_next("/notebooks/DE-1/lab?x=1") == "/notebooks/DE-1/lab?x=1"
