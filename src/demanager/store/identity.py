"""Users, their project memberships and their API tokens.

Tokens are stored only as keyed digests (``identity/secrets.py`` computes them);
this module never sees a token or a password in clear.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from demanager.store.tables import MembershipRow, TokenRow, UserRow


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
    role: str | None
    """The user's role in the token's project; ``None`` once they left it."""
    expires_at: int | None
    revoked: bool
    issued_at: int = 0


@dataclass(frozen=True)
class TokenInfo:
    id: str
    user_name: str
    project_id: str | None
    created_at: int
    expires_at: int | None
    revoked: bool


@dataclass(frozen=True)
class Account:
    user: User
    has_password: bool
    roles: dict[str, str]
    """project id -> role."""


# Built once: composing the statement costs more than running it (every request pays).
_LOOKUP = (
    select(
        TokenRow.project_id,
        TokenRow.expires_at,
        TokenRow.revoked,
        TokenRow.created_at,
        UserRow.id,
        UserRow.name,
        UserRow.enabled,
        MembershipRow.role,
    )
    .select_from(TokenRow)
    .outerjoin(UserRow, UserRow.id == TokenRow.user_id)
    .outerjoin(
        MembershipRow,
        (MembershipRow.user_id == TokenRow.user_id)
        & (MembershipRow.project_id == TokenRow.project_id),
    )
    .where(TokenRow.token_hash == bindparam("token_hash"))
)


class IdentityRepository:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    # --- users ------------------------------------------------------------------------

    async def ensure_user(self, name: str, *, now_ms: int) -> User:
        async with self._sessions() as session:
            row = await session.scalar(select(UserRow).where(UserRow.name == name))
            if row is None:
                row = UserRow(id=uuid.uuid4().hex, name=name, enabled=True, created_at=now_ms)
                session.add(row)
                try:
                    await session.commit()
                except IntegrityError:  # created meanwhile by another process
                    await session.rollback()
                    row = await session.scalar(select(UserRow).where(UserRow.name == name))
                    assert row is not None
            return User(id=row.id, name=row.name, enabled=row.enabled)

    async def create_user(
        self, name: str, *, now_ms: int, password_hash: str | None
    ) -> User | None:
        """A new user, or ``None`` when the name is taken."""
        row = UserRow(
            id=uuid.uuid4().hex, name=name, enabled=True, created_at=now_ms,
            password_hash=password_hash,
        )
        async with self._sessions() as session:
            session.add(row)
            try:
                await session.commit()
            except IntegrityError:
                return None
        return User(id=row.id, name=row.name, enabled=True)

    async def find_user(
        self, *, name: str | None = None, user_id: str | None = None
    ) -> tuple[User, str | None] | None:
        """The user and their password hash, by name or id."""
        condition = UserRow.name == name if name is not None else UserRow.id == user_id
        async with self._sessions() as session:
            row = await session.scalar(select(UserRow).where(condition))
        if row is None:
            return None
        return User(row.id, row.name, row.enabled), row.password_hash

    async def set_enabled(self, name: str, enabled: bool) -> bool:
        async with self._sessions() as session:
            result = await session.execute(
                update(UserRow).where(UserRow.name == name).values(enabled=enabled)
            )
            await session.commit()
            return bool(result.rowcount)  # type: ignore[attr-defined]

    async def delete_user(self, name: str) -> bool:
        """Remove the user, their memberships and their tokens (their instances stay)."""
        async with self._sessions() as session:
            user_id = await session.scalar(select(UserRow.id).where(UserRow.name == name))
            if user_id is None:
                return False
            await session.execute(delete(TokenRow).where(TokenRow.user_id == user_id))
            await session.execute(delete(MembershipRow).where(MembershipRow.user_id == user_id))
            await session.execute(delete(UserRow).where(UserRow.id == user_id))
            await session.commit()
            return True

    async def accounts(self) -> list[Account]:
        async with self._sessions() as session:
            users = (await session.scalars(select(UserRow).order_by(UserRow.name))).all()
            members = (await session.scalars(select(MembershipRow))).all()
        roles: dict[str, dict[str, str]] = {}
        for m in members:
            roles.setdefault(m.user_id, {})[m.project_id] = m.role
        return [
            Account(User(u.id, u.name, u.enabled), u.password_hash is not None,
                    dict(sorted(roles.get(u.id, {}).items())))
            for u in users
        ]

    # --- memberships ------------------------------------------------------------------

    async def set_role(self, user_id: str, project_id: str, role: str) -> None:
        async with self._sessions() as session:
            row = await session.get(MembershipRow, (user_id, project_id))
            if row is None:
                session.add(MembershipRow(user_id=user_id, project_id=project_id, role=role))
            else:
                row.role = role
            await session.commit()

    async def ensure_member(self, user_id: str, project_id: str, role: str) -> str:
        """The user's role in the project, making them ``role`` there if they have none."""
        async with self._sessions() as session:
            row = await session.get(MembershipRow, (user_id, project_id))
            if row is not None:
                return row.role
            session.add(MembershipRow(user_id=user_id, project_id=project_id, role=role))
            try:
                await session.commit()
            except IntegrityError:
                await session.rollback()
                found = await session.get(MembershipRow, (user_id, project_id))
                assert found is not None
                return found.role
            return role

    async def standing(self, user_id: str, project_id: str) -> tuple[User, str | None] | None:
        """The user and their role in the project (``None`` if not a member), in one
        query: the proxy asks this on every request a signed grant carries."""
        query = (
            select(UserRow.id, UserRow.name, UserRow.enabled, MembershipRow.role)
            .select_from(UserRow)
            .outerjoin(MembershipRow, (MembershipRow.user_id == UserRow.id)
                       & (MembershipRow.project_id == project_id))
            .where(UserRow.id == user_id)
        )
        async with self._sessions.kw["bind"].connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        return User(row.id, row.name, bool(row.enabled)), row.role

    async def roles(self, user_id: str) -> dict[str, str]:
        async with self._sessions() as session:
            rows = (
                await session.scalars(select(MembershipRow).where(MembershipRow.user_id == user_id))
            ).all()
        return {r.project_id: r.role for r in rows}

    # --- tokens -----------------------------------------------------------------------

    async def add_token(
        self, *, digest: str, user_id: str, project_id: str | None, now_ms: int,
        expires_at: int | None,
    ) -> str:
        token_id = uuid.uuid4().hex
        async with self._sessions() as session:
            session.add(
                TokenRow(
                    id=token_id, token_hash=digest, user_id=user_id, project_id=project_id,
                    expires_at=expires_at, revoked=False, created_at=now_ms,
                )
            )
            await session.commit()
        return token_id

    async def revoke(self, *, digest: str | None = None, token_id: str | None = None) -> bool:
        condition = TokenRow.token_hash == digest if digest is not None else TokenRow.id == token_id
        async with self._sessions() as session:
            result = await session.execute(update(TokenRow).where(condition).values(revoked=True))
            await session.commit()
            return bool(result.rowcount)  # type: ignore[attr-defined]

    async def tokens(self, user_name: str | None = None) -> list[TokenInfo]:
        query = (
            select(TokenRow, UserRow.name)
            .join(UserRow, UserRow.id == TokenRow.user_id)
            .order_by(TokenRow.created_at, TokenRow.id)
        )
        if user_name is not None:
            query = query.where(UserRow.name == user_name)
        async with self._sessions() as session:
            rows = (await session.execute(query)).all()
        return [
            TokenInfo(t.id, name, t.project_id, t.created_at, t.expires_at, t.revoked)
            for t, name in rows
        ]

    async def lookup(self, digest: str) -> TokenRecord | None:
        """The token's record, its user and their role, in one query (every request pays)."""
        async with self._sessions.kw["bind"].connect() as conn:
            row = (await conn.execute(_LOOKUP, {"token_hash": digest})).first()
        if row is None:
            return None
        user = None if row.id is None else User(row.id, row.name, bool(row.enabled))
        return TokenRecord(
            user, row.project_id, row.role, row.expires_at, bool(row.revoked), row.created_at
        )
