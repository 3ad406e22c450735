"""The token cache: valid tokens only, for a short time, forgotten on every change."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from demanager import errors
from demanager.identity.cache import TokenCache
from demanager.identity.principal import Role
from demanager.identity.service import IdentityService
from demanager.store.database import make_sessionmaker
from demanager.store.identity import IdentityRepository
from tests.server import migrated_database

PROJECT = "a4a5d4098fb4474fa22cd05f897d6b99"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_entry_lives_for_the_ttl_only() -> None:
    clock = Clock()
    cache: TokenCache[str] = TokenCache(ttl_seconds=2, clock=clock)
    cache.put("d1", "alice", cache.generation)
    clock.now += 1.9
    assert cache.get("d1") == "alice"
    clock.now += 0.1
    assert cache.get("d1") is None


def test_ttl_zero_keeps_nothing() -> None:
    cache: TokenCache[str] = TokenCache(ttl_seconds=0)
    cache.put("d1", "alice", cache.generation)
    assert cache.get("d1") is None and len(cache) == 0


def test_size_is_bounded_stale_entries_first_then_the_oldest() -> None:
    clock = Clock()
    cache: TokenCache[int] = TokenCache(ttl_seconds=10, max_entries=3, clock=clock)
    cache.put("old", 0, cache.generation)
    clock.now += 11
    for n in range(1, 4):
        cache.put(f"d{n}", n, cache.generation)
    assert len(cache) == 3 and cache.get("old") is None
    cache.put("d4", 4, cache.generation)
    assert len(cache) == 3
    assert cache.get("d1") is None and cache.get("d4") == 4


def test_a_lookup_that_began_before_a_change_is_not_kept() -> None:
    cache: TokenCache[str] = TokenCache(ttl_seconds=10)
    began = cache.generation
    cache.changed()  # e.g. the token was revoked while its lookup was in flight
    cache.put("d1", "alice", began)
    assert cache.get("d1") is None


def test_a_change_in_another_process_reaches_this_one_through_the_marker(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "identity.changed"
    server: TokenCache[str] = TokenCache(ttl_seconds=60, marker=marker)
    operator_command: TokenCache[str] = TokenCache(ttl_seconds=60, marker=marker)
    server.put("d1", "alice", server.generation)
    assert server.get("d1") == "alice"
    operator_command.changed()
    assert server.get("d1") is None
    server.put("d1", "alice again", server.generation)
    assert server.get("d1") == "alice again"  # read after the change: kept
    operator_command.changed()
    operator_command.changed()
    assert server.get("d1") is None


# --- the identity service over a real store -------------------------------------------


@pytest.fixture
async def identity(tmp_path: Path) -> Any:
    async with migrated_database(tmp_path) as (_url, engine):
        repo = IdentityRepository(make_sessionmaker(engine))
        operator = await repo.ensure_user("admin", now_ms=0)
        yield IdentityService(repository=repo, key=b"k" * 32, now_ms=lambda: 1_000,
                              operator=operator, operator_token="dmo_operator",
                              cache_seconds=60, change_marker=tmp_path / "identity.changed")


class CountingRepository:
    """Counts the store's token lookups, and can hold one until told to go on."""

    def __init__(self, inner: IdentityRepository) -> None:
        self.inner = inner
        self.lookups = 0
        self.hold: asyncio.Event | None = None
        self.holding = asyncio.Event()

    async def lookup(self, digest: str) -> Any:
        self.lookups += 1
        found = await self.inner.lookup(digest)
        if self.hold is not None:
            self.holding.set()
            await self.hold.wait()
        return found

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def counting(identity: IdentityService) -> CountingRepository:
    repo = CountingRepository(identity._repo)
    identity._repo = repo  # type: ignore[assignment]
    return repo


def held(identity: IdentityService) -> tuple[CountingRepository, asyncio.Event]:
    """Counted lookups, each held until the returned gate is set."""
    repo = counting(identity)
    gate = asyncio.Event()
    repo.hold = gate
    return repo, gate


async def test_a_valid_token_is_looked_up_once_then_remembered(
    identity: IdentityService,
) -> None:
    repo = counting(identity)
    issued = await identity.issue_for("alice", PROJECT, ttl_seconds=None)
    for _ in range(5):
        principal = await identity.authenticate(issued.token, PROJECT)
        assert principal.user_name == "alice" and principal.role is Role.MEMBER
    assert repo.lookups == 1


async def test_a_revoked_token_is_refused_at_once(identity: IdentityService) -> None:
    issued = await identity.issue_for("alice", PROJECT, ttl_seconds=None)
    await identity.authenticate(issued.token, PROJECT)  # now remembered
    assert await identity.revoke(issued.token)
    with pytest.raises(errors.TokenInvalid):
        await identity.authenticate(issued.token, PROJECT)


async def test_a_disabled_or_deleted_user_and_a_new_role_apply_at_once(
    identity: IdentityService,
) -> None:
    bob = (await identity.issue_for("bob", PROJECT, ttl_seconds=None)).token
    carol = (await identity.issue_for("carol", PROJECT, ttl_seconds=None)).token
    for token in (bob, carol):
        await identity.authenticate(token, PROJECT)
    await identity.add_to_project("carol", project_id=PROJECT, role=Role.ADMIN)
    assert (await identity.authenticate(carol, PROJECT)).role is Role.ADMIN
    assert await identity.set_enabled("bob", False)
    with pytest.raises(errors.UserUnavailable):
        await identity.authenticate(bob, PROJECT)
    assert await identity.delete_user("carol")
    with pytest.raises(errors.TokenInvalid):
        await identity.authenticate(carol, PROJECT)


async def test_failures_are_never_remembered(identity: IdentityService) -> None:
    repo = counting(identity)
    for _ in range(3):
        with pytest.raises(errors.TokenInvalid):
            await identity.authenticate("dmt_guessed", PROJECT)
    assert repo.lookups == 3
    assert len(identity._cache) == 0


async def test_expiry_is_checked_on_every_use(tmp_path: Path) -> None:
    now = [1_000]
    async with migrated_database(tmp_path) as (_url, engine):
        repo = IdentityRepository(make_sessionmaker(engine))
        identity = IdentityService(
            repository=repo, key=b"k" * 32, now_ms=lambda: now[0],
            operator=await repo.ensure_user("admin", now_ms=0), operator_token="dmo_op",
            cache_seconds=60)
        issued = await identity.issue_for("dave", PROJECT, ttl_seconds=1)
        await identity.authenticate(issued.token, PROJECT)
        now[0] += 1_000
        with pytest.raises(errors.TokenExpired):
            await identity.authenticate(issued.token, PROJECT)


async def test_a_lookup_in_flight_during_a_revocation_is_not_remembered(
    identity: IdentityService,
) -> None:
    issued = await identity.issue_for("erin", PROJECT, ttl_seconds=None)
    repo, gate = held(identity)
    in_flight = asyncio.create_task(identity.authenticate(issued.token, PROJECT))
    await repo.holding.wait()  # it has read the token as valid, before the revocation
    repo.hold = None
    assert await identity.revoke(issued.token)
    gate.set()
    assert (await in_flight).user_name == "erin"  # answered as of its read...
    with pytest.raises(errors.TokenInvalid):  # ...but not remembered
        await identity.authenticate(issued.token, PROJECT)


async def test_requests_that_miss_together_share_one_lookup(identity: IdentityService) -> None:
    """A remembered token running out under load sends one query, not one per request."""
    issued = await identity.issue_for("frank", PROJECT, ttl_seconds=None)
    repo, gate = held(identity)
    waiting = [asyncio.create_task(identity.authenticate(issued.token, PROJECT))
               for _ in range(16)]
    await repo.holding.wait()
    await asyncio.sleep(0)  # every request has reached the lookup in flight
    gate.set()
    assert {p.user_name for p in await asyncio.gather(*waiting)} == {"frank"}
    assert repo.lookups == 1
    failing = [asyncio.create_task(identity.authenticate("dmt_guessed", PROJECT))
               for _ in range(4)]
    results = await asyncio.gather(*failing, return_exceptions=True)
    assert all(isinstance(r, errors.TokenInvalid) for r in results)
    assert repo.lookups == 2, "a shared failure is one lookup too, and is not remembered"


async def test_a_request_after_a_revocation_never_joins_a_lookup_begun_before_it(
    identity: IdentityService,
) -> None:
    issued = await identity.issue_for("gina", PROJECT, ttl_seconds=None)
    repo, gate = held(identity)
    before = asyncio.create_task(identity.authenticate(issued.token, PROJECT))
    await repo.holding.wait()  # read as valid, still in flight
    repo.hold = None
    assert await identity.revoke(issued.token)
    with pytest.raises(errors.TokenInvalid):  # its own lookup, after the revocation
        # (joining the held lookup instead would wait for the gate: a timeout here)
        await asyncio.wait_for(identity.authenticate(issued.token, PROJECT), 10)
    gate.set()
    assert (await before).user_name == "gina"
    assert repo.lookups == 2


async def test_a_caller_that_goes_away_leaves_the_shared_lookup_to_the_others(
    identity: IdentityService,
) -> None:
    issued = await identity.issue_for("hugo", PROJECT, ttl_seconds=None)
    repo, gate = held(identity)
    first = asyncio.create_task(identity.authenticate(issued.token, PROJECT))
    await repo.holding.wait()
    second = asyncio.create_task(identity.authenticate(issued.token, PROJECT))
    await asyncio.sleep(0)
    first.cancel()
    gate.set()
    assert (await second).user_name == "hugo"
    assert first.cancelled() and repo.lookups == 1
