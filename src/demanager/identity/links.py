"""Signed grants: one user's access to one instance, until a deadline.

A grant is what a signed link (``…/signed-url``), the historical token route and
the proxy's session cookie carry: who (user, project), which instance, until
when, and, when it was obtained with an API token, that token's keyed digest so
revoking the token ends the grant too. It is signed with a key derived from the
server key (HMAC-SHA256), so only this server (or a replica sharing its key) can
make one; it is not encrypted, and holds nothing secret.

Verification here is only about the value itself (signature, deadline, shape);
``IdentityService.redeem`` re-checks the user and membership on every use.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass

from demanager import errors

PREFIX = "dmg_"
MAX_LENGTH = 1024
"""Longer values are refused unread: a grant is a few hundred characters."""
_PURPOSE = b"demanager instance grant v1"


@dataclass(frozen=True)
class Grant:
    user_id: str
    project_id: str
    instance_id: str
    expires_at: int
    """Milliseconds since the epoch."""
    token_digest: str | None = None
    """The API token it was obtained with (keyed digest), re-checked on every use."""


def _grant_key(server_key: bytes) -> bytes:
    # A key of its own, so a grant's MAC can never double as a token digest.
    return hmac.new(server_key, _PURPOSE, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(server_key: bytes, grant: Grant) -> str:
    payload = {"u": grant.user_id, "p": grant.project_id, "i": grant.instance_id,
               "e": grant.expires_at}
    if grant.token_digest is not None:
        payload["d"] = grant.token_digest
    body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode("utf-8"))
    mac = hmac.new(_grant_key(server_key), body.encode("ascii"), hashlib.sha256).digest()
    return f"{PREFIX}{body}.{_b64(mac)}"


def verify(server_key: bytes, value: str, *, now_ms: int) -> Grant:
    """The grant ``value`` carries; ``TokenInvalid`` if forged or malformed,
    ``TokenExpired`` past its deadline."""
    if not value.startswith(PREFIX) or len(value) > MAX_LENGTH:
        raise errors.TokenInvalid()
    body, _, mac = value[len(PREFIX):].partition(".")
    try:
        expected = hmac.new(_grant_key(server_key), body.encode("ascii"), hashlib.sha256)
        if not hmac.compare_digest(expected.digest(), _unb64(mac)):
            raise errors.TokenInvalid()
        data = json.loads(_unb64(body))
        grant = Grant(
            user_id=_text(data["u"]), project_id=_text(data["p"]),
            instance_id=_text(data["i"]), expires_at=int(data["e"]),
            token_digest=_text(data["d"]) if "d" in data else None,
        )
    except (UnicodeError, ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise errors.TokenInvalid() from exc
    if grant.expires_at <= now_ms:
        raise errors.TokenExpired()
    return grant


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError("not a string")
    return value
