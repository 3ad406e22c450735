"""Users, roles and tokens as the operator manages them (``demanager users|tokens``),
seen through a real server: who reaches what, and what the store keeps."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import uuid
from collections.abc import Callable

import pytest

from tests.api.helpers import assert_error, create, listing, ok
from tests.conftest import client_for
from tests.server import DEMANAGER, ServerProcess


def add_user(server: ServerProcess, name: str, project: str, role: str,
             password: str | None = None) -> subprocess.CompletedProcess[str]:
    args = ["users", "create", name, "--project", project, "--role", role]
    if password is not None:
        args.append("--password-stdin")
    return subprocess.run(
        [DEMANAGER, *args], env=server.env, input=f"{password}\n" if password else None,
        capture_output=True, text=True, timeout=60,
    )


def token_for(server: ServerProcess, name: str, project: str, *extra: str) -> str:
    return server.make_token(project, name, *extra)


@pytest.fixture
def team(server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    return server_factory()


def test_users_create_list_and_duplicate(team: ServerProcess) -> None:
    project = uuid.uuid4().hex
    made = add_user(team, "carol", project, "admin", password="s3cret pass")
    assert made.returncode == 0, made.stderr
    assert "password user carol" in made.stdout
    assert add_user(team, "dave", project, "member").returncode == 0
    again = add_user(team, "carol", project, "member")
    assert again.returncode == 1 and "already exists" in again.stderr
    bad_role = add_user(team, "erin", project, "owner")
    assert bad_role.returncode == 2 and "admin or member" in bad_role.stderr
    rows = {line.split("\t")[0]: line.split("\t") for line in
            team.cli("users", "list").stdout.splitlines()}
    assert rows["carol"][1:] == ["enabled", "password", f"{project}:admin"]
    assert rows["dave"][1:] == ["enabled", "token-only", f"{project}:member"]
    assert "erin" not in rows


def test_admin_sees_the_project_member_only_their_own(team: ServerProcess) -> None:
    project = uuid.uuid4().hex
    for name, role in (("ann", "admin"), ("ben", "member"), ("cat", "member")):
        assert add_user(team, name, project, role).returncode == 0
    tokens = {name: token_for(team, name, project) for name in ("ann", "ben", "cat")}
    clients = {name: client_for(team, project=project, token=t) for name, t in tokens.items()}
    try:
        ids = {name: create(c, name=f"nb-{name}")["id"] for name, c in clients.items()}
        # The admin reaches every instance of the project, and lists them all on request.
        assert {i["id"] for i in listing(clients["ann"], show_self="false")["instances"]} == set(
            ids.values()
        )
        assert ok(clients["ann"].get(f"/{ids['ben']}"))["name"] == "nb-ben"
        # A member sees only their own: another's instance answers exactly as a missing one.
        assert [i["id"] for i in listing(clients["ben"], show_self="false")["instances"]] == [
            ids["ben"]
        ]
        missing = clients["ben"].get(f"/DE-{uuid.uuid4()}")
        foreign = clients["ben"].get(f"/{ids['cat']}")
        assert foreign.status_code == missing.status_code == 400
        assert foreign.json()["error_code"] == missing.json()["error_code"] == "ModelArts.6309"
        for attempt in (
            clients["ben"].put(f"/{ids['cat']}", json={"description": "x"}),
            clients["ben"].post(f"/{ids['cat']}/action", json={"action": "stop"}),
            clients["ben"].delete(f"/{ids['cat']}"),
        ):
            assert_error(attempt, "ModelArts.6309")
        assert ok(clients["cat"].get(f"/{ids['cat']}"))["status"] != "DELETED"
        # The admin may act on a member's instance.
        assert ok(clients["ann"].put(f"/{ids['cat']}", json={"description": "by ann"}))
    finally:
        for c in clients.values():
            c.close()


def test_tokens_list_and_revoke_by_id(team: ServerProcess) -> None:
    project = uuid.uuid4().hex
    token = token_for(team, "fay", project, "--expires-in", "3600")
    with client_for(team, project=project, token=token) as client:
        ok(client.get("", params={"de_type": "Notebook"}))
        listed = [line.split("\t") for line in
                  team.cli("tokens", "list", "--user", "fay").stdout.splitlines()]
        assert len(listed) == 1
        token_id, user, bound, _created, expires, state = listed[0]
        assert (user, bound, state) == ("fay", project, "active")
        assert expires != "never"
        assert token not in team.cli("tokens", "list").stdout
        assert team.cli("tokens", "revoke", token_id).returncode == 0
        # Revocation takes effect on the very next request.
        assert_error(client.get("", params={"de_type": "Notebook"}), "ModelArts.6620", 401)
    assert team.cli("tokens", "list", "--user", "fay").stdout.split("\t")[-1].strip() == "revoked"


def test_deleting_a_user_ends_their_tokens(team: ServerProcess) -> None:
    project = uuid.uuid4().hex
    token = token_for(team, "gus", project)
    with client_for(team, project=project, token=token) as client:
        ok(client.get("", params={"de_type": "Notebook"}))
        assert team.cli("users", "delete", "gus").returncode == 0
        assert_error(client.get("", params={"de_type": "Notebook"}), "ModelArts.6620", 401)
    assert team.cli("users", "delete", "gus").returncode == 1


def test_secrets_at_rest_are_keyed_digests_and_argon2(team: ServerProcess) -> None:
    project = uuid.uuid4().hex
    assert add_user(team, "hal", project, "member", password="correct horse").returncode == 0
    token = token_for(team, "hal", project)
    if team.database.url:
        pytest.skip("reads the SQLite file directly")
    with sqlite3.connect(team.data_dir / "demanager.db") as db:
        digests = [row[0] for row in db.execute("SELECT token_hash FROM tokens")]
        (password_hash,) = db.execute(
            "SELECT password_hash FROM users WHERE name = 'hal'"
        ).fetchone()
    assert token not in digests
    assert hashlib.sha256(token.encode()).hexdigest() not in digests  # keyed, not plain
    assert password_hash.startswith("$argon2id$") and "correct horse" not in password_hash
    for secret in ("server.key", "demanager.db"):
        assert (team.data_dir / secret).stat().st_mode & 0o777 == 0o600, secret
    # Not even listable by others; as root, traversable so instance uids reach volumes/.
    expected = 0o711 if os.geteuid() == 0 else 0o700
    assert team.data_dir.stat().st_mode & 0o777 == expected
    assert token not in team.log()
