"""Users and their API tokens. Tokens are stored as SHA-256 hashes only."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from demanager.store.tables import TokenRow, UserRow

TOKEN_PREFIX = "dmt_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class User:
    id: str
    name: str
    enabled: bool


@dataclass(frozen=True)
class TokenRecord:
    user: User | None
    """``None`` when the token's user row is gone."""
    project_id: str | None
    expires_at: int | None
    revoked: bool


# Built once: composing the statement costs more than running it (every request pays).
_LOOKUP = (
    select(
        TokenRow.project_id,
        TokenRow.expires_at,
        TokenRow.revoked,
        UserRow.id,
        UserRow.name,
        UserRow.enabled,
    )
    .select_from(TokenRow)
    .outerjoin(UserRow, UserRow.id == TokenRow.user_id)
    .where(TokenRow.token_hash == bindparam("token_hash"))
)


class IdentityRepository:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def ensure_user(self, name: str, *, now_ms: int) -> User:
        async with self._sessions() as session:
            row = await session.scalar(select(UserRow).where(UserRow.name == name))
            if row is None:
                row = UserRow(id=uuid.uuid4().hex, name=name, enabled=True, created_at=now_ms)
                session.add(row)
                await session.commit()
            return User(id=row.id, name=row.name, enabled=row.enabled)

    async def set_enabled(self, name: str, enabled: bool) -> None:
        async with self._sessions() as session:
            row = await session.scalar(select(UserRow).where(UserRow.name == name))
            if row is not None:
                row.enabled = enabled
                await session.commit()

    async def issue_token(
        self, user: User, project_id: str | None, *, now_ms: int, expires_at: int | None = None
    ) -> str:
        token = new_token()
        async with self._sessions() as session:
            session.add(
                TokenRow(
                    id=uuid.uuid4().hex,
                    token_hash=hash_token(token),
                    user_id=user.id,
                    project_id=project_id,
                    expires_at=expires_at,
                    revoked=False,
                    created_at=now_ms,
                )
            )
            await session.commit()
        return token

    async def revoke(self, token: str) -> bool:
        async with self._sessions() as session:
            row = await session.scalar(
                select(TokenRow).where(TokenRow.token_hash == hash_token(token))
            )
            if row is None:
                return False
            row.revoked = True
            await session.commit()
            return True

    async def lookup(self, token: str) -> TokenRecord | None:
        """The token's record and its user, in one query (every request pays for it)."""
        async with self._sessions.kw["bind"].connect() as conn:
            row = (await conn.execute(_LOOKUP, {"token_hash": hash_token(token)})).first()
        if row is None:
            return None
        user = None if row.id is None else User(row.id, row.name, bool(row.enabled))
        return TokenRecord(user, row.project_id, row.expires_at, bool(row.revoked))
