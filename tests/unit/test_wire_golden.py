"""The read path's presenter (``engine/wire.py``, encoded by orjson) against the wire
models it replaces: the same bytes for 200 varied instances, as a list and one by one.

The reference is what the routes answered before: ``Presenter.instance(...)`` dumped
with ``model_dump(mode="json", exclude_unset=True)`` and encoded by ``WireJSON``.
"""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from demanager.api.responses import FastWireJSON, WireJSON
from demanager.domain.catalog import Catalog
from demanager.domain.instance import (
    AutoStop,
    FailedReason,
    Instance,
    InstanceId,
    Location,
    ProjectId,
    Storage,
    UserId,
)
from demanager.domain.lifecycle import FAILED, HOLDS_RESOURCES, QUEUED, InstanceStatus
from demanager.domain.queueing import Estimate, QueueEstimates
from demanager.engine.presenters import FlavorView, Presenter
from demanager.engine.wire import Bodies, WirePresenter

NOW = 1_800_000_000_000
TARGET = "https://notebooks.example.org"
PROJECT = "0f2a9c6e5d4b4a3f9e8d7c6b5a4f3e2d"
UNICODE = ["数据探索", "Ünïcødé ✓", "emoji 🚀 test", "שלום", "plain", "", "tab\tand \"quote\""]


def catalog() -> Catalog:
    data = yaml.safe_load((Path(__file__).parents[1] / "data" / "catalog.yaml").read_text())
    data["profiles"].append({"id": "Labelled", "flavor_type": "GPU", "name": "Labelled (名前)",
                             "labels": {"team": "研究", "tier": "gold"}})
    data["pools"].append({"id": "pool-shared", "name": "shared-pool", "type": "USER_DEFINED",
                          "owner_project": "aaaa0000bbbb1111cccc2222dddd3333"})
    return Catalog.from_mapping(data)


def storage(rng: random.Random) -> Storage:
    kind = rng.choice(["evs", "obs", "obsfs", "none"])
    if kind == "evs":
        return Storage("evs", Location(path="/home/ma-user/work",
                                       volume_size=rng.choice([5, 10, 4096, None])))
    if kind == "obs":
        return Storage("obs", Location(path=f"/bucket-{rng.randrange(9)}/dir/"))
    if kind == "obsfs":
        return Storage("obsfs", Location(path="pfs", mount_path="/home/ma-user/work/ref",
                                         access_modes=rng.choice(["ReadOnlyMany",
                                                                  "ReadWriteMany"])))
    return Storage("evs", Location())  # no location stored at all


def instances(cat: Catalog, count: int = 200) -> list[Instance]:
    rng = random.Random(20261202)
    statuses = list(InstanceStatus)
    profiles = [*cat.profiles, "Removed profile"]
    flavors = [*cat.flavors, "modelarts.removed"]
    pools = [None, None, "pool-dedicated", "pool-shared", "pool-gone"]
    made = []
    for n in range(count):
        status = statuses[n % len(statuses)]
        created = NOW - rng.randrange(10**9)
        auto = rng.choice([
            AutoStop(), AutoStop(enable=True, duration=3600, prompt=False),
            AutoStop(enable=False, duration=7200), AutoStop(enable=True, duration=86400),
        ])
        failed = None
        if status in FAILED or rng.random() < 0.1:
            failed = FailedReason(code=f"ModelArts.{rng.choice([6360, 6528, 6361])}",
                                  message=rng.choice(UNICODE),
                                  detail=rng.choice([{}, {"event_id": "12", "backend": "é"}]))
        made.append(Instance(
            id=InstanceId(f"DE-{n:08d}-c73d-11ea-964c-0255ac100033"),
            project_id=ProjectId(PROJECT),
            name=f"{rng.choice(UNICODE)}-{n}",
            description=rng.choice(UNICODE),
            profile_id=rng.choice(profiles),
            flavor=rng.choice(flavors),
            storage=storage(rng),
            extend_storage=rng.choice([None, (), tuple(storage(rng) for _ in range(2))]),
            auto_stop=auto,
            annotations=rng.choice([{}, {"team": "analytics"}, {"url": "user's", "k": "v"},
                                    {"target_domain": "x", "名": "値"}]),
            workspace_id=rng.choice(["0", "ws-analytics"]),
            pool_id=rng.choice(pools),
            ai_project_id=rng.choice(["default-ai-project", "proj-7"]),
            user_id=UserId(f"{rng.randrange(16**32):032x}"),
            user_name=rng.choice(["alice", "bob", "søren", "李雷"]),
            status=status,
            desired="RUNNING",
            created_at=created,
            updated_at=created + rng.randrange(10**6),
            running_since=created if status is InstanceStatus.RUNNING else None,
            stop_at=rng.choice([None, NOW + 1_234_567, NOW - 5_000]),
            requested_at=rng.choice([None, created + 10]),
            failed=failed,
            reserved_at=rng.choice([None, NOW - 60_000]),
            gpus=rng.choice([None, ("0",), ("0", "3")]),
        ))
    return made


def flavor_view(cat: Catalog, items: list[Instance]) -> FlavorView:
    queued = [i for i in items if i.status in QUEUED]
    queues: dict[tuple[str | None, str], list[str]] = {}
    for i in queued:
        queues.setdefault((i.pool_id, i.flavor), []).append(i.id)
    estimates = {}
    for scope, ids in queues.items():
        entries = {}
        for rank, instance_id in enumerate(ids[:-1], start=1):  # the last one: no estimate
            known = rank % 2 == 1
            entries[instance_id] = Estimate(
                rank=rank, begin_timestamp=NOW - 1000,
                end_timestamp=NOW + rank * 60_000 if known else None,
                remain_time=rank * 60 if known else None)
        # A queue with no slot in sight has no estimate: queue_left_time is then 0.
        left = None if scope[0] == "pool-dedicated" else 42
        estimates[scope] = QueueEstimates(entries=entries, next_end_timestamp=NOW + 9_000,
                                          next_remain_time=left)
    sold_out = frozenset({(None, "modelarts.vm.cpu.soldout"),
                          (None, "modelarts.vm.cpu.free-full"),
                          ("pool-dedicated", "modelarts.vm.cpu.free")})
    counts = {"modelarts.vm.cpu.2u": 3, "modelarts.vm.cpu.free": 1}
    return FlavorView(sold_out=sold_out, counts=counts, user_name="alice", project_id=PROJECT,
                      queues=queues, estimates=estimates)


def reference(cat: Catalog, items: list[Instance], view: FlavorView) -> list[dict[str, Any]]:
    presenter = Presenter(cat, TARGET)
    return [presenter.instance(i, now_ms=NOW, flavors=view).model_dump(
        mode="json", exclude_unset=True) for i in items]


@pytest.fixture(scope="module")
def case() -> tuple[Catalog, list[Instance], FlavorView]:
    cat = catalog()
    items = instances(cat)
    return cat, items, flavor_view(cat, items)


def ordered(value: Any) -> Any:
    """``value`` with every dict as its list of items: equality then checks key order."""
    if isinstance(value, dict):
        return [(k, ordered(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [ordered(v) for v in value]
    return value


def test_a_page_is_the_same_bytes_as_the_models_dumped(case: Any) -> None:
    cat, items, view = case
    old = WireJSON({"total_count": 1000, "instances": reference(cat, items, view)}).body
    fast = WirePresenter(cat, TARGET, view)
    new = FastWireJSON(
        {"total_count": 1000, "instances": [fast.instance(i, now_ms=NOW) for i in items]}).body
    assert ordered(json.loads(new)) == ordered(json.loads(old))
    assert new == old


def test_each_instance_alone_is_the_same_too(case: Any) -> None:
    cat, items, view = case
    for instance, expected in zip(items, reference(cat, items, view), strict=True):
        got = WirePresenter(cat, TARGET, view).instance(instance, now_ms=NOW)
        assert ordered(got) == ordered(expected), instance.id
        assert FastWireJSON(got).body == WireJSON(expected).body


def test_the_case_covers_every_null_and_absent_form(case: Any) -> None:
    """The comparison is only worth the variety it sees: every status, and each key that
    is sometimes absent, sometimes null, sometimes a value."""
    cat, items, view = case
    bodies = reference(cat, items, view)
    assert {b["status"] for b in bodies} == {s.value for s in InstanceStatus}
    for key in ("pool", "error_code", "queuing_info"):
        assert any(key in b for b in bodies) and any(key not in b for b in bodies), key
    specs = [b["spec"] for b in bodies]
    assert any("resource_reserved_timestamp" in s for s in specs)
    assert any("resource_reserved_timestamp" not in s for s in specs)
    for key in ("extend_storage", "failed_reasons", "extend_params"):
        assert any(s[key] is None for s in specs) and any(s[key] for s in specs), key
    assert any(s["extend_storage"] == [] for s in specs)
    stops = [s["auto_stop"] for s in specs]
    assert any("stop_timestamp" in a for a in stops) and any("duration" not in a for a in stops)
    locations = [s["storage"]["location"] for s in specs]
    assert {len(loc) for loc in locations} == {1, 3}
    assert any(loc.get("volume_size", 0) is None for loc in locations)
    infos = [b["queuing_info"] for b in bodies if "queuing_info" in b]
    assert any("remain_time" in q for q in infos) and any("remain_time" not in q for q in infos)
    details = [b["flavor_details"] for b in bodies]
    assert any("queuing_num" in d for d in details) and any("duration" in d for d in details)
    assert any(d["status"] == "soldOut" for d in details)
    profiles = [b["profile"] for b in bodies]
    assert any("labels" in p for p in profiles) and any(p["description"] == "" for p in profiles)
    assert any("annotations" in p["provision"] for p in profiles)
    assert any(b["status"] in {s.value for s in HOLDS_RESOURCES} and b["spec"]["extend_params"]
               for b in bodies)
    assert any(not b["name"].isascii() for b in bodies)


def test_remembered_bodies_are_the_bytes_encoded_afresh(case: Any) -> None:
    """``WirePresenter.encoded`` with ``Bodies``: the same bytes as encoding the dict, on
    the first response and on the next ones, when the caller's counts change the flavor
    details, when a second passes, and for waiting instances (never kept)."""
    cat, items, view = case
    bodies = Bodies()
    counted = replace(view, counts={**view.counts, "modelarts.vm.cpu.2u": 4})
    for now, flavors in ((NOW, view), (NOW, view), (NOW, counted), (NOW + 1_000, counted),
                         (NOW + 1_001, view)):
        fresh = WirePresenter(cat, TARGET, flavors)
        kept = WirePresenter(cat, TARGET, flavors, bodies)
        for i in items:
            expected = orjson.dumps(fresh.instance(i, now_ms=now))
            assert orjson.dumps(kept.encoded(i, now_ms=now)) == expected, (i.id, now)
            assert orjson.dumps(fresh.encoded(i, now_ms=now)) == expected
    assert 0 < len(bodies) == sum(i.status not in QUEUED for i in items)
    page = WirePresenter(cat, TARGET, view, bodies)
    assert FastWireJSON({"total_count": 1000, "instances": [
        page.encoded(i, now_ms=NOW) for i in items]}).body == WireJSON(
        {"total_count": 1000, "instances": reference(cat, items, view)}).body


def test_bodies_are_kept_for_an_instance_object_not_its_id(case: Any) -> None:
    """A changed row is a new instance object: its body is encoded again, even with the
    same id and version; and no more bodies are kept than asked."""
    cat, items, view = case
    running = next(i for i in items if i.status is InstanceStatus.RUNNING)
    bodies = Bodies(capacity=3)
    presenter = WirePresenter(cat, TARGET, view, bodies)
    first = orjson.loads(orjson.dumps(presenter.encoded(running, now_ms=NOW)))
    renamed = replace(running, description="changed")
    second = orjson.loads(orjson.dumps(presenter.encoded(renamed, now_ms=NOW)))
    assert (first["description"], second["description"]) == (running.description, "changed")
    for i in items[:10]:
        presenter.encoded(i, now_ms=NOW)
    assert len(bodies) == 3
