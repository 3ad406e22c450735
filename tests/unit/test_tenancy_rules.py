"""The pure rules of tenancy: project quotas, frozen, flavor permissions, retention."""

from __future__ import annotations

from typing import Any

import pytest

from demanager import errors
from demanager.domain.catalog import Catalog, CatalogError, Flavor
from demanager.domain.instance import AutoStop, Instance, InstanceId, ProjectId, Storage, UserId
from demanager.domain.lifecycle import HOLDS_RESOURCES, QUEUED, Operation
from demanager.domain.lifecycle import InstanceStatus as S
from demanager.domain.planning import Observation, Step, Workload, plan
from demanager.domain.retention import HOUR_MS, INACTIVE, cutoffs, expired, expires_at
from demanager.domain.tenancy import (
    FROZEN_REFUSES,
    ProjectSettings,
    ensure_not_frozen,
    ensure_project_open,
    instance_quota,
)

NOW = 1_700_000_000_000


def _instance(status: S, *, updated_at: int = NOW, frozen: bool = False) -> Instance:
    return Instance(
        id=InstanceId("DE-1"), project_id=ProjectId("p"), name="nb", description="",
        profile_id="prof", flavor="f", storage=Storage("evs"), extend_storage=None,
        auto_stop=AutoStop(), annotations={}, workspace_id="0", pool_id=None,
        ai_project_id="default-ai-project", user_id=UserId("u" * 32), user_name="u",
        status=status, desired="RUNNING", created_at=updated_at, updated_at=updated_at,
        frozen=frozen,
    )


# --- quotas ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (None, 10),
        (ProjectSettings("p"), 10),
        (ProjectSettings("p", instance_quota=3), 3),
        (ProjectSettings("p", instance_quota=0), 0),
        (ProjectSettings("p", instance_quota=25, frozen=True), 25),
    ],
)
def test_a_projects_quota_is_its_own_when_set_else_the_default(
    settings: ProjectSettings | None, expected: int
) -> None:
    assert instance_quota(settings, 10) == expected


# --- frozen ---------------------------------------------------------------------------


def test_frozen_refuses_what_would_take_resources_again() -> None:
    assert {Operation.START, Operation.RESTART, Operation.QUEUE} == FROZEN_REFUSES


@pytest.mark.parametrize("operation", list(Operation))
def test_a_frozen_instance_answers_6326_only_to_start_restart_and_queue(
    operation: Operation,
) -> None:
    ensure_not_frozen(False, S.STOPPED, operation)  # never refused unfrozen
    if operation in FROZEN_REFUSES:
        with pytest.raises(errors.InstanceFrozen) as raised:
            ensure_not_frozen(True, S.STOPPED, operation)
        assert raised.value.status == S.STOPPED and raised.value.operation == operation
    else:
        ensure_not_frozen(True, S.STOPPED, operation)


def test_a_frozen_project_takes_no_new_instance() -> None:
    ensure_project_open(None)
    ensure_project_open(ProjectSettings("p", instance_quota=1))
    with pytest.raises(errors.ProjectFrozen, match="'p' is frozen"):
        ensure_project_open(ProjectSettings("p", frozen=True))


def test_both_frozen_errors_are_6326() -> None:
    from demanager.schemas.errors import lookup

    assert lookup(errors.ProjectFrozen("p")) == (400, "ModelArts.6326")
    assert lookup(errors.InstanceFrozen(S.STOPPED, Operation.START)) == (400, "ModelArts.6326")


@pytest.mark.parametrize("status", sorted(QUEUED))
def test_the_engine_never_admits_a_frozen_queued_instance(status: S) -> None:
    observed: Observation[Any] = Observation(Workload.ABSENT)
    assert plan(_instance(status), observed, NOW, admissible=True) is Step.ADMIT
    assert plan(_instance(status, frozen=True), observed, NOW, admissible=True) is Step.NOTHING


def test_a_frozen_instance_is_still_driven_to_rest_and_deleted() -> None:
    """Freezing stops nothing and keeps nothing running: a stop or delete goes on."""
    stopping = _instance(S.STOPPING, frozen=True)
    assert plan(stopping, Observation(Workload.READY), NOW) is Step.HALT
    deleted = _instance(S.DELETED, frozen=True).evolve(cleanup_pending=True)
    assert plan(deleted, Observation(Workload.ABSENT), NOW) is Step.DESTROY


# --- flavor permissions ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("users", "projects", "permitted"),
    [
        (None, None, {("alice", "p1"), ("alice", "p2"), ("bob", "p1"), ("bob", "p2")}),
        ({"alice"}, None, {("alice", "p1"), ("alice", "p2")}),
        (None, {"p1"}, {("alice", "p1"), ("bob", "p1")}),
        ({"alice"}, {"p1"}, {("alice", "p1")}),
        (set(), None, set()),
        (None, set(), set()),
    ],
    ids=["open", "users", "projects", "both", "no-user", "no-project"],
)
def test_a_caller_is_permitted_when_no_list_set_excludes_them(
    users: set[str] | None, projects: set[str] | None, permitted: set[tuple[str, str]]
) -> None:
    flavor = Flavor(
        name="f", type="CPU", params={},
        permitted_users=None if users is None else frozenset(users),
        permitted_projects=None if projects is None else frozenset(projects),
    )
    callers = {(u, p) for u in ("alice", "bob") for p in ("p1", "p2")}
    assert {c for c in callers if flavor.permits(*c)} == permitted


def _catalog(**flavor: Any) -> Catalog:
    return Catalog.from_mapping({
        "profiles": [{"id": "p", "flavor_type": "CPU"}],
        "flavors": [{"name": "f", "type": "CPU", **flavor}],
    })


def test_the_catalog_reads_permitted_projects_and_store_time() -> None:
    flavor = _catalog(permitted_projects=["p1", 2], store_time=48).flavors["f"]
    assert flavor.permitted_projects == frozenset({"p1", "2"})
    assert flavor.permitted_users is None
    assert flavor.store_time == 48
    assert _catalog().flavors["f"].store_time == -1


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"permitted_projects": "p1"}, "permitted_projects must be a list"),
        ({"permitted_users": "alice"}, "permitted_users must be a list"),
        ({"store_time": -2}, "store_time must be whole hours"),
        ({"store_time": 1.5}, "store_time must be whole hours"),
        ({"store_time": "24"}, "store_time must be whole hours"),
    ],
)
def test_a_wrong_permission_list_or_store_time_stops_the_start(
    entry: dict[str, Any], message: str
) -> None:
    with pytest.raises(CatalogError, match=message):
        _catalog(**entry)


# --- retention ------------------------------------------------------------------------


def test_inactive_statuses_hold_nothing_and_wait_for_nothing() -> None:
    assert not INACTIVE & HOLDS_RESOURCES
    assert not INACTIVE & QUEUED
    assert S.DELETED not in INACTIVE


DAY = Flavor(name="f", type="CPU", params={}, store_time=24)
FOREVER = Flavor(name="f", type="CPU", params={})


@pytest.mark.parametrize("status", list(S))
def test_only_an_inactive_instance_expires(status: S) -> None:
    old = _instance(status, updated_at=NOW - 30 * 24 * HOUR_MS)
    assert expired(old, DAY, NOW) is (status in INACTIVE)


def test_an_inactive_instance_expires_store_time_hours_after_its_last_update() -> None:
    stopped = _instance(S.STOPPED, updated_at=NOW)
    assert expires_at(stopped, DAY) == NOW + 24 * HOUR_MS
    assert not expired(stopped, DAY, NOW + 24 * HOUR_MS - 1)
    assert expired(stopped, DAY, NOW + 24 * HOUR_MS)


def test_forever_and_frozen_never_expire() -> None:
    ancient = _instance(S.STOPPED, updated_at=0)
    assert expires_at(ancient, FOREVER) is None
    assert not expired(ancient, FOREVER, NOW)
    assert expires_at(ancient.evolve(frozen=True), DAY) is None


def test_zero_hours_expires_at_once() -> None:
    zero = Flavor(name="f", type="CPU", params={}, store_time=0)
    assert expired(_instance(S.CREATE_FAILED, updated_at=NOW), zero, NOW)


def test_cutoffs_name_each_flavor_that_does_not_keep_forever() -> None:
    week = Flavor(name="w", type="CPU", params={}, store_time=168)
    kept = Flavor(name="k", type="CPU", params={})
    assert cutoffs([DAY, kept, week], NOW) == {"f": NOW - 24 * HOUR_MS, "w": NOW - 168 * HOUR_MS}
