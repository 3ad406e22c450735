"""Projects' own object-storage keys and the buckets granted to projects
(``demanager storage``), the ``BucketDirectory`` that ``objectstore/access.py`` asks.

A project's secret key is kept encrypted (Fernet: AES-128-CBC and HMAC-SHA256) under a
key derived from the server key with HKDF, so a copy of the database alone gives no
secret away, and the derived key serves nothing else the server key signs. What is
encrypted names the project and the access key too, so a ciphertext copied into
another project's row is refused rather than used there.
"""

from __future__ import annotations

import base64
import builtins
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import SecretStr
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from demanager import errors
from demanager.domain.validation import BUCKET_RE
from demanager.objectstore.access import BucketLookup, ProjectKeys
from demanager.store.tables import BucketGrantRow, ProjectStorageKeysRow

if TYPE_CHECKING:
    from cryptography.fernet import Fernet

_KDF_INFO = b"demanager/object-storage-keys/v1"
"""Binds the derived key to this one use of the server key."""


@dataclass(frozen=True)
class StoredKeys:
    """A project's keys as ``storage list`` shows them: never the secret."""

    project_id: str
    access_key_id: str
    updated_at: int
    readable: bool
    """Whether this server's key decrypts the secret (False: the server key changed
    since the keys were set, and they must be set again)."""


@dataclass(frozen=True)
class BucketGrant:
    bucket: str
    project_id: str
    granted_at: int


@dataclass(frozen=True)
class AccessListing:
    keys: builtins.list[StoredKeys]
    """By project."""
    grants: builtins.list[BucketGrant]
    """By bucket."""


def is_bucket_name(name: str) -> bool:
    """The S3 rules: 3 to 63 lowercase letters, digits, ``.`` and ``-``, beginning and
    ending with a letter or digit."""
    return BUCKET_RE.fullmatch(name) is not None


class ObjectAccessRepository:
    """Implements ``objectstore.access.BucketDirectory``; ``server_key`` is the bytes of
    ``identity.secrets.load_server_key``."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], server_key: bytes) -> None:
        self._sessions = sessions
        if not server_key:
            raise ValueError("the server key is empty")
        self._server_key = server_key
        self._made: Fernet | None = None

    @property
    def _fernet(self) -> Fernet:
        # Made on the first key stored or read: cryptography is about 6 MiB of a server's
        # memory, and most servers never hold a project's keys.
        if self._made is None:
            from cryptography.fernet import Fernet

            self._made = Fernet(_derive(self._server_key))
        return self._made

    async def lookup(self, project_id: str, bucket: str) -> BucketLookup:
        """The project's own keys (decrypted) and the project the bucket is granted to.

        ``StorageKeysUnreadable`` when the project has keys this server key cannot read."""
        async with self._sessions() as session:
            keys = await session.get(ProjectStorageKeysRow, project_id)
            granted_to = await session.scalar(
                select(BucketGrantRow.project_id).where(BucketGrantRow.bucket == bucket)
            )
        return BucketLookup(
            project_keys=self._decrypt(keys) if keys is not None else None,
            granted_to=granted_to,
        )

    async def set_keys(
        self, project_id: str, access_key_id: str, secret: SecretStr, *, now_ms: int
    ) -> None:
        """Set (or replace) the project's own access key; the secret is stored encrypted."""
        ciphertext = self._encrypt(project_id, access_key_id, secret)
        async with self._sessions() as session:
            row = await session.get(ProjectStorageKeysRow, project_id)
            if row is None:
                try:
                    async with session.begin_nested():
                        session.add(ProjectStorageKeysRow(
                            project_id=project_id, access_key_id=access_key_id,
                            secret_ciphertext=ciphertext, updated_at=now_ms,
                        ))
                    await session.commit()
                    return
                except IntegrityError:  # another command set them meanwhile: replace those
                    row = await session.get(
                        ProjectStorageKeysRow, project_id, populate_existing=True
                    )
                    assert row is not None
            row.access_key_id = access_key_id
            row.secret_ciphertext = ciphertext
            row.updated_at = now_ms
            await session.commit()

    async def clear_keys(self, project_id: str) -> bool:
        """Forget the project's own keys; False when it had none."""
        async with self._sessions() as session:
            result = await session.execute(
                delete(ProjectStorageKeysRow).where(ProjectStorageKeysRow.project_id == project_id)
            )
            await session.commit()
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def grant(
        self, bucket: str, project_id: str, *, move: bool = False, now_ms: int
    ) -> str | None:
        """Let the deployment's keys serve ``bucket`` for ``project_id``; returns the
        project it was granted to before (None: nobody).

        ``InvalidBucketName`` for a name S3 would refuse; ``BucketTaken`` when another
        project has the bucket, unless ``move``: then it is that project's no more."""
        if not is_bucket_name(bucket):
            raise errors.InvalidBucketName(bucket)
        async with self._sessions() as session:
            row = await _grant_row(session, bucket)
            if row is None:
                try:
                    async with session.begin_nested():
                        session.add(BucketGrantRow(
                            bucket=bucket, project_id=project_id, granted_at=now_ms
                        ))
                    await session.commit()
                    return None
                except IntegrityError:  # granted meanwhile: judge that grant below
                    row = await _grant_row(session, bucket)
                    assert row is not None
            previous = row.project_id
            if previous != project_id:
                if not move:
                    raise errors.BucketTaken(bucket, previous)
                row.project_id = project_id
                row.granted_at = now_ms
                await session.commit()
        return previous

    async def revoke(self, bucket: str) -> str | None:
        """Take the bucket back; returns the project it was granted to (None: nobody)."""
        async with self._sessions() as session:
            row = await _grant_row(session, bucket)
            if row is None:
                return None
            previous = row.project_id
            await session.delete(row)
            await session.commit()
        return previous

    async def list(self) -> AccessListing:
        """Every project with keys (never the secret) and every grant."""
        async with self._sessions() as session:
            keys = (await session.scalars(
                select(ProjectStorageKeysRow).order_by(ProjectStorageKeysRow.project_id)
            )).all()
            grants = (await session.scalars(
                select(BucketGrantRow).order_by(BucketGrantRow.bucket)
            )).all()
        return AccessListing(
            keys=[
                StoredKeys(k.project_id, k.access_key_id, k.updated_at, self._readable(k))
                for k in keys
            ],
            grants=[BucketGrant(g.bucket, g.project_id, g.granted_at) for g in grants],
        )

    def _encrypt(self, project_id: str, access_key_id: str, secret: SecretStr) -> str:
        payload = {"project": project_id, "ak": access_key_id, "sk": secret.get_secret_value()}
        return self._fernet.encrypt(json.dumps(payload).encode("utf-8")).decode("ascii")

    def _decrypt(self, row: ProjectStorageKeysRow) -> ProjectKeys:
        from cryptography.fernet import InvalidToken

        try:
            payload = json.loads(self._fernet.decrypt(row.secret_ciphertext.encode("ascii")))
        except (InvalidToken, ValueError):
            raise errors.StorageKeysUnreadable(row.project_id) from None
        if payload.get("project") != row.project_id or payload.get("ak") != row.access_key_id:
            raise errors.StorageKeysUnreadable(row.project_id)
        return ProjectKeys(row.access_key_id, SecretStr(payload["sk"]))

    def _readable(self, row: ProjectStorageKeysRow) -> bool:
        try:
            self._decrypt(row)
        except errors.StorageKeysUnreadable:
            return False
        return True


async def _grant_row(session: AsyncSession, bucket: str) -> BucketGrantRow | None:
    # The row lock (PostgreSQL) makes a concurrent grant or revoke of the bucket wait,
    # so a decision is never made on a grant that is being changed.
    return await session.get(
        BucketGrantRow, bucket, with_for_update=True, populate_existing=True
    )


def _derive(server_key: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_KDF_INFO).derive(
        server_key
    )
    return base64.urlsafe_b64encode(key)
