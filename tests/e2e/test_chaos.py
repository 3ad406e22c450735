"""Three replicas on one PostgreSQL, two of them killed with SIGKILL and restarted, while
a seeded stream of creates and actions goes to whichever replica is alive.

The fake backend runs in its shared mode (one ``DEMANAGER_FAKE__STATE_DIR``), so every
replica reaches every workload, as on a cluster, and its ledger records every launch.

Each instance is driven by one actor at a time: it sends an action only once the
previous one has converged, so what each instance should be, and how many launches it
should have had, follow from the answers the API gave. Instances proceed in parallel.
A request that fails because its replica was killed may or may not have been applied:
its instance becomes *uncertain*, and is exempt from the launch count only.

Afterwards: every instance is what the last action answered 200 asked for; no
instance was lost; each accepted create, start and restart launched exactly one
workload, and no workload was launched twice for one action (generation); nothing
runs behind STOPPED or a delete; and no request answered 5xx.
"""

from __future__ import annotations

import collections
import concurrent.futures
import os
import random
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from demanager.backends.fake_state import Launch, launches, workloads
from tests.conftest import MINIMAL_BODY
from tests.server import ServerProcess, TestDatabase

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.environ.get("DEMANAGER_TEST_POSTGRES_URL"),
        reason="replicas share one PostgreSQL: set DEMANAGER_TEST_POSTGRES_URL",
    ),
]

SEED = int(os.environ.get("DEMANAGER_TEST_CHAOS_SEED", "20251201"))
"""Every random choice follows from it; a failure names it, to run that stream again."""
OPERATIONS = int(os.environ.get("DEMANAGER_TEST_CHAOS_OPERATIONS", "200"))
"""Creates and actions, in all (more make a longer soak)."""
ACTORS = 24
"""Instances driven at once: enough to keep the replicas busy, which is when one of them
acts late."""
REPLICAS = 3
KILLS = 2
LEASE_SECONDS = 3
START_DELAY_SECONDS = 0.1
"""Short boots: a replica that acts late finds the others done, not still at work."""
CONVERGE_SECONDS = 60.0
"""How long one action may take to converge, a replica's death included."""
STREAM_SECONDS = 240.0
"""No operation is sent after this long."""
CUT_OFF_GRACE_SECONDS = 1.0
"""A request cut off by its replica's death may still take effect a moment later: the
database finishes the statement (a COMMIT) it had received. Wait that long before
reading what such a request did."""

SETTLED = {"RUNNING", "STOPPED"}
FAILED = {"CREATE_FAILED", "START_FAILED"}
GONE = "DELETED"
#: What each action asks for, and the actions a settled status accepts (§4.3).
TARGET = {"create": "RUNNING", "start": "RUNNING", "restart": "RUNNING", "stop": "STOPPED",
          "delete": GONE}
ACTIONS: dict[str, dict[str, float]] = {"RUNNING": {"stop": 0.5, "restart": 0.5},
                                        "STOPPED": {"start": 0.7, "delete": 0.3}}
LAUNCHING = {"create", "start", "restart"}


class Uncertain(Exception):
    """The replica died while it handled the request: it may or may not have applied it."""


@dataclass
class Tracked:
    """One instance as the answers it got describe it."""

    id: str
    expected: str = "RUNNING"
    """What the last action answered 200 asked for (or what an uncertain one left)."""
    launches: int = 1
    """Workloads the accepted create, starts and restarts ask for."""
    uncertain: bool = False
    history: list[str] = field(default_factory=list)

    def note(self, started: float, text: str) -> None:
        self.history.append(f"{time.monotonic() - started:7.2f}s {text}")


class Replicas:
    """The servers, which of them are alive, and one client per replica and thread."""

    def __init__(self, servers: list[ServerProcess], project: str) -> None:
        self.servers = servers
        self.project = project
        self.alive = set(range(len(servers)))
        self.pids: dict[int, str] = {}
        """pid -> which replica, and which of its runs, that process was."""
        for index in self.alive:
            self._name(index)
        self._lock = threading.Lock()
        self._local = threading.local()
        self._clients: list[httpx.Client] = []

    def pick(self, rng: random.Random) -> int:
        with self._lock:
            alive = sorted(self.alive)
        return rng.choice(alive) if alive else rng.randrange(len(self.servers))

    def client(self, index: int) -> httpx.Client:
        clients: dict[int, httpx.Client] | None = getattr(self._local, "clients", None)
        if clients is None:
            clients = self._local.clients = {}
        if index not in clients:
            server = self.servers[index]
            # A connection per request: one kept alive would outlive a killed replica.
            clients[index] = httpx.Client(
                base_url=f"{server.url}/v1/{self.project}/demanager/instances",
                headers={"X-Auth-Token": server.token},
                timeout=30.0,
                limits=httpx.Limits(max_keepalive_connections=0),
            )
            with self._lock:
                self._clients.append(clients[index])
        return clients[index]

    def kill(self, index: int) -> None:
        with self._lock:
            self.alive.discard(index)
        self.servers[index].kill()

    def restart(self, index: int) -> None:
        self.servers[index].start()
        self._name(index)
        with self._lock:
            self.alive.add(index)

    def _name(self, index: int) -> None:
        proc = self.servers[index].proc
        assert proc is not None
        runs = sum(name.startswith(f"replica {index} ") for name in self.pids.values())
        self.pids[proc.pid] = f"replica {index} run {runs + 1}"

    def close(self) -> None:
        for client in self._clients:
            client.close()


class Chaos:
    """The stream of operations, and what it saw."""

    def __init__(self, replicas: Replicas) -> None:
        self.replicas = replicas
        self.started = time.monotonic()
        self.started_ms = time.time() * 1000
        self.taken = 0
        """Operations begun (tickets taken)."""
        self.tracked: dict[str, Tracked] = {}
        self.uncertain_creates = 0
        self.server_errors: list[str] = []
        self.problems: list[str] = []
        self.convergence: list[float] = []
        self._lock = threading.Lock()

    # --- requests ------------------------------------------------------------------

    def request(self, rng: random.Random, method: str, path: str,
                body: dict[str, Any] | None = None, *,
                idempotent: bool) -> tuple[int, httpx.Response]:
        """Send to a random live replica; another one if it cannot be reached (nothing was
        sent). :class:`Uncertain` if it died while handling a request that changes state.
        Returns the replica's number and its answer."""
        for _ in range(200):
            index = self.replicas.pick(rng)
            try:
                response = self.replicas.client(index).request(method, path, json=body)
            except httpx.ConnectError:
                time.sleep(0.05)
                continue
            except httpx.TransportError as exc:
                if idempotent:
                    time.sleep(0.05)
                    continue
                raise Uncertain(f"replica {index}: {exc!r}") from exc
            if response.status_code >= 500:
                with self._lock:
                    self.server_errors.append(
                        f"replica {index} {method} {path}: {response.status_code} "
                        f"{response.text[:300]}")
            return index, response
        raise AssertionError(f"no replica answered {method} {path}")

    def status(self, rng: random.Random, instance_id: str) -> str:
        _, response = self.request(rng, "GET", f"/{instance_id}", idempotent=True)
        if response.status_code == 400 and response.json()["error_code"] == "ModelArts.6309":
            return GONE  # the contract's answer for an instance that does not exist
        if response.status_code != 200:
            return f"HTTP {response.status_code}"
        return str(response.json()["status"])

    def settle(self, rng: random.Random, item: Tracked, wanted: set[str]) -> str | None:
        """Poll until the instance is in one of ``wanted``; None (a problem is noted) when
        it fails or does not get there in time."""
        deadline = time.monotonic() + CONVERGE_SECONDS
        begun = time.monotonic()
        delay = 0.05
        status = "?"
        while time.monotonic() < deadline:
            status = self.status(rng, item.id)
            if status in wanted:
                with self._lock:
                    self.convergence.append(time.monotonic() - begun)
                return status
            if status in FAILED or status.startswith("HTTP"):
                break
            if status == "UNAVAILABLE" and not item.history[-1].endswith("UNAVAILABLE"):
                item.note(self.started, "seen UNAVAILABLE")  # its workload went away
            time.sleep(delay)
            delay = min(delay * 1.5, 0.3)
        item.note(self.started, f"stuck in {status}, wanted {sorted(wanted)}")
        with self._lock:
            self.problems.append(f"{item.id} is {status}, not {sorted(wanted)}")
        return None

    # --- one actor: a sequence of instances, one action at a time --------------------

    def take(self) -> bool:
        """May one more operation begin?"""
        with self._lock:
            if self.taken >= OPERATIONS or time.monotonic() - self.started > STREAM_SECONDS:
                return False
            self.taken += 1
            return True

    def actor(self, number: int) -> None:
        rng = random.Random(f"{SEED}-{number}")
        while self.take():
            item = self.create(rng, number)
            certain = True
            while item is not None:
                # After an uncertain action the instance may be either way: once it
                # settles, what it is becomes what it should be.
                wanted = {item.expected} if certain else {*SETTLED, GONE}
                status = self.settle(rng, item, wanted)
                if status is None:
                    break  # given up on; the checks report it
                item.expected = status
                if status == GONE or not self.take():
                    break
                certain = self.act(rng, item, status)

    def create(self, rng: random.Random, number: int) -> Tracked | None:
        body = {**MINIMAL_BODY, "name": f"chaos-{number}-{rng.randrange(10**6)}"}
        try:
            replica, response = self.request(rng, "POST", "", body, idempotent=False)
        except Uncertain:
            with self._lock:
                self.uncertain_creates += 1
            return None
        if response.status_code != 200:
            with self._lock:
                self.problems.append(f"create answered {response.status_code}: {response.text}")
            return None
        item = Tracked(response.json()["id"])
        item.note(self.started, f"create: 200 from replica {replica}")
        with self._lock:
            self.tracked[item.id] = item
        return item

    def act(self, rng: random.Random, item: Tracked, status: str) -> bool:
        """Send a random action its status accepts; False when its fate is unknown."""
        choices = ACTIONS[status]
        action = rng.choices(list(choices), list(choices.values()))[0]
        try:
            if action == "delete":
                replica, response = self.request(rng, "DELETE", f"/{item.id}",
                                                 idempotent=False)
            else:
                replica, response = self.request(rng, "POST", f"/{item.id}/action",
                                                 {"action": action}, idempotent=False)
        except Uncertain as exc:
            item.uncertain = True
            item.note(self.started, f"{action}: uncertain ({exc})")
            time.sleep(CUT_OFF_GRACE_SECONDS)
            return False
        item.note(self.started, f"{action}: {response.status_code} from replica {replica}")
        if response.status_code >= 500:  # reported; whether it was applied is unknown
            item.uncertain = True
            return False
        if response.status_code != 200:
            with self._lock:
                self.problems.append(f"{item.id}: {action} in {status} answered "
                                     f"{response.status_code} {response.text[:300]}")
            return True
        item.expected = TARGET[action]
        if action in LAUNCHING:
            item.launches += 1
        return True


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[Replicas]:
    database = TestDatabase()
    state = tmp_path / "fake-state"
    env = {
        "DEMANAGER_SECRET_KEY": secrets.token_hex(32),
        "DEMANAGER_FAKE__STATE_DIR": str(state),
        "DEMANAGER_FAKE__START_DELAY_SECONDS": str(START_DELAY_SECONDS),
        "DEMANAGER_LEASE_SECONDS": str(LEASE_SECONDS),
        "DEMANAGER_RATE_LIMIT_PER_SECOND": "0",
        "DEMANAGER_INSTANCE_QUOTA": "1000",
        "DEMANAGER_RECONCILE_INTERVAL_SECONDS": "0.5",
        "DEMANAGER_LOG_LEVEL": "debug",  # each engine step, for the report of a failure
    }
    servers = [ServerProcess(tmp_path / f"replica{i}", backend="fake", env=env,
                             database=database) for i in range(REPLICAS)]
    project = servers[0].project
    try:
        for server in servers:  # one at a time: the first applies the migrations
            server.start()
        group = Replicas(servers, project)
        yield group
        group.close()
    finally:
        for server in servers:
            server.close()
        database.drop()


def test_replicas_survive_kill_9(replicas: Replicas, tmp_path: Path) -> None:
    state = tmp_path / "fake-state"
    rng = random.Random(SEED)
    chaos = Chaos(replicas)
    # Each victim is killed once the stream reaches its operation, and started again
    # after its downtime; the two may be down at once.
    kills = sorted(zip(rng.sample(range(OPERATIONS // 10, OPERATIONS // 2), KILLS),
                       rng.sample(range(REPLICAS), KILLS),
                       [rng.uniform(0.5, 2 * LEASE_SECONDS) for _ in range(KILLS)],
                       strict=True))
    events: list[str] = []

    def note(text: str) -> None:
        events.append(f"{time.monotonic() - chaos.started:7.2f}s {text}")

    # Actors only send requests; this thread starts and kills servers (each server dies
    # with the thread that started it).
    with concurrent.futures.ThreadPoolExecutor(ACTORS) as pool:
        actors = [pool.submit(chaos.actor, number) for number in range(ACTORS)]
        down_until: dict[int, float] = {}
        while kills or down_until:
            for victim, until in list(down_until.items()):
                if time.monotonic() >= until:
                    replicas.restart(victim)
                    del down_until[victim]
                    note(f"replica {victim} answers again")
            if kills and (chaos.taken >= kills[0][0] or all(a.done() for a in actors)):
                at, victim, down = kills.pop(0)
                replicas.kill(victim)
                down_until[victim] = time.monotonic() + down
                note(f"killed replica {victim} at operation {at}, for {down:.1f}s")
            time.sleep(0.02)
        for done in concurrent.futures.as_completed(actors):
            done.result()
    streamed = time.monotonic() - chaos.started

    # Quiet for longer than a lease: a replica that took an instance over late would
    # launch now, and is caught below.
    time.sleep(2 * LEASE_SECONDS + 1)
    report = _check(chaos, state, rng)
    uncertain = sum(item.uncertain for item in chaos.tracked.values())
    context = "\n".join([
        f"seed {SEED}; stream {streamed:.1f}s; {chaos.taken} operations on "
        f"{len(chaos.tracked)} instances ({uncertain} uncertain), "
        f"{chaos.uncertain_creates} uncertain creates; convergence "
        f"max {max(chaos.convergence, default=0):.1f}s",
        *events,
        f"replica logs: {', '.join(str(s.log_path) for s in replicas.servers)}",
    ])
    print(context)
    assert not report, context + "\n\n" + "\n\n".join(report)


def _check(chaos: Chaos, state: Path, rng: random.Random) -> list[str]:
    report = [f"problem: {problem}" for problem in chaos.problems]
    report += [f"5xx: {error}" for error in chaos.server_errors]
    ledger = launches(state)
    by_instance: dict[str, list[Launch]] = collections.defaultdict(list)
    for launch in ledger:
        by_instance[launch.instance_id].append(launch)

    # No workload launched twice for one action.
    twice = [key for key, n in collections.Counter(
        (launch.instance_id, launch.generation) for launch in ledger).items() if n > 1]
    for instance_id, generation in twice:
        report.append(f"{instance_id}: launched twice for generation {generation}: "
                      f"{_describe(chaos, instance_id, by_instance)}")

    # Every instance is what its last accepted action asked for, and was launched once
    # per accepted create, start and restart.
    running = workloads(state)
    listed = {body["id"]: body["status"] for body in _listing(chaos, rng)}
    for item in chaos.tracked.values():
        status = chaos.status(rng, item.id)
        if status != item.expected:
            report.append(f"{item.id}: {status}, expected {item.expected} (lost?): "
                          f"{_describe(chaos, item.id, by_instance)}")
        if item.expected != GONE and item.id not in listed:
            report.append(f"{item.id}: missing from the listing")
        if (item.expected == "RUNNING") != (item.id in running):
            report.append(f"{item.id}: expected {item.expected}, workload "
                          f"{'present' if item.id in running else 'absent'}: "
                          f"{_describe(chaos, item.id, by_instance)}")
        launched = len(by_instance.get(item.id, []))
        if not item.uncertain and launched != item.launches:
            report.append(f"{item.id}: launched {launched} times for {item.launches} "
                          f"accepted launching actions: "
                          f"{_describe(chaos, item.id, by_instance)}")

    # Creates whose answer was lost with their replica: at most that many strangers,
    # each running.
    strangers = {i: s for i, s in listed.items() if i not in chaos.tracked}
    if len(strangers) > chaos.uncertain_creates:
        report.append(f"{len(strangers)} unknown instances for {chaos.uncertain_creates} "
                      f"uncertain creates: {strangers}")
    for instance_id, status in strangers.items():
        if status != "RUNNING" or instance_id not in running:
            report.append(f"{instance_id} (an uncertain create) is {status}, workload "
                          f"{'present' if instance_id in running else 'absent'}")
    return report


def _listing(chaos: Chaos, rng: random.Random) -> list[dict[str, Any]]:
    _, response = chaos.request(rng, "GET", "?de_type=Notebook&show_self=false&limit=0",
                                idempotent=True)
    assert response.status_code == 200, response.text
    instances: list[dict[str, Any]] = response.json()["instances"]
    return instances


def _describe(chaos: Chaos, instance_id: str,
              by_instance: dict[str, list[Launch]]) -> str:
    item = chaos.tracked.get(instance_id)
    lines = [f"{(launch.launched_at - chaos.started_ms) / 1000:7.2f}s launched for "
             f"generation {launch.generation} by "
             f"{chaos.replicas.pids.get(launch.pid, f'pid {launch.pid}')}"
             for launch in by_instance.get(instance_id, [])]
    if item is not None:
        lines = sorted(lines + item.history)
    return "".join(f"\n    {line}" for line in lines)
