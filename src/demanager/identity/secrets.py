"""Secrets at rest: the server key, keyed token digests and password hashes.

Tokens are looked up by a keyed digest (HMAC-SHA256 with the server key) so a
lookup stays one indexed query while a stolen database alone is useless: without
the key no digest can be computed from a guess. Passwords are hashed with
argon2id, which is slow on purpose.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from argon2 import PasswordHasher

TOKEN_PREFIX = "dmt_"
KEY_FILE = "server.key"


@functools.cache
def _hasher() -> tuple[PasswordHasher, str]:
    """The hasher and a hash of nothing anyone knows, made by the first password set or
    checked: most servers authenticate API tokens only and never load argon2."""
    from argon2 import PasswordHasher

    hasher = PasswordHasher()
    # Verifying against this when a user does not exist costs as much as a real check,
    # so a failed login does not tell whether the name exists.
    return hasher, hasher.hash(secrets.token_hex(16))


def load_server_key(data_dir: Path, configured: str | None = None) -> bytes:
    """The key behind token digests and signed links: the configured one (several
    replicas must share it), else one generated once and kept 0600 in the data dir."""
    if configured:
        return configured.encode("utf-8")
    path = data_dir / KEY_FILE
    try:
        return bytes.fromhex(path.read_text(encoding="utf-8").strip())
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race: use its key
        return bytes.fromhex(path.read_text(encoding="utf-8").strip())
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(key.hex() + "\n")
    return key


def token_digest(key: bytes, token: str) -> str:
    return hmac.new(key, token.encode("utf-8"), hashlib.sha256).hexdigest()


def same_digest(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("ascii"), b.encode("ascii"))


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_password(password: str) -> str:
    return _hasher()[0].hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    """Constant work whether or not a hash is stored; never raises on a bad hash."""
    from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

    hasher, dummy = _hasher()
    try:
        return hasher.verify(stored or dummy, password) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
