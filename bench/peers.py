"""demanager against JupyterHub, the peer a team weighs it against, in one run.

Installs JupyterHub (latest, or ``--jupyterhub``) in its own virtualenv and
configurable-http-proxy from npm, both under the system temp dir and kept there for the
next run (keyed by version). Then measures, back to back, on JupyterHub and on demanager:

* one start: from the request to the notebook answering ``/api/status`` through the
  peer's proxy (CHP; demanager's own), and the PSS of that notebook once idle;
* 10 and 30 concurrent starts: starts per second until every notebook answers, and
  the CPU seconds a start costs the notebook and the control plane;
* with 1,000 records in each store (JupyterHub users; demanager instances on the fake
  backend), GET one and GET a page of 200 at 16 connections (``wrk`` from Debian, else
  an aiohttp client at the same concurrency), and the control plane's memory.

Both peers run the same JupyterLab: the notebook environment of the process backend
(``DEMANAGER_PROCESS__NOTEBOOK_PYTHON``). It prints each pair and its ratio; nothing is
asserted. Loopback only, besides PyPI and npm; everything started is stopped.
docs/benchmarks.md (Peers) says how each peer is set up and why.

    .venv/bin/python bench/peers.py [--records 1000] [--concurrent 10,30] [--seconds 10]
                                    [--jupyterhub VERSION]

One file past the usual size on purpose: the two peers' drivers sit side by side, so
that a reader can check that both are measured alike.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import httpx
import psutil

# The repository root instead of bench/, whose queue.py would shadow the standard library's.
sys.path.remove(str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.spawn import bare_process
from bench.targets import Figures, report
from tests.server import ServerProcess, free_port, notebook_python, processes_of

import demanager
from demanager.settings import Settings

CACHE = Path(tempfile.gettempdir()) / "demanager-peers"
"""Where the peer's virtualenv and node_modules stay between runs."""
BODY = {"profile_id": "Multi-Engine 1.0 (python3)-cpu", "flavor": "modelarts.vm.cpu.2u",
        "spec": {"storage": {"type": "evs"}}}
POLL = 0.05  # one notebook: both sides poll its /api/status alike, as bench/spawn.py does
BATCH_POLL = 0.25  # many: one cheap list request per round, so polling steals little CPU
IDLE = 5.0  # seconds a notebook sits idle before its memory is read
MIB = 1024 * 1024


# --- installing the peer --------------------------------------------------------------


def _run(argv: list[str]) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def latest_jupyterhub() -> str:
    out = _run([sys.executable, "-m", "pip", "index", "versions", "jupyterhub"])
    match = re.search(r"^jupyterhub \(([^)]+)\)", out, re.M)
    if not match:
        raise RuntimeError(f"no JupyterHub version in pip's answer:\n{out}")
    return match.group(1)


def install_jupyterhub(version: str, notebook: Path) -> Path:
    """A virtualenv with JupyterHub ``version`` over the notebook environment; its path.

    The venv is made from the notebook environment's own interpreter, and a ``.pth``
    file puts that environment's site-packages after the venv's: the hub and
    ``jupyterhub-singleuser`` then run the very JupyterLab the process backend runs, and
    pip installs only what JupyterHub adds (its database, proxy and auth packages)."""
    venv = CACHE / f"jupyterhub-{version}"
    if (venv / ".installed").exists():
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    base = Path(os.path.realpath(notebook))
    _run([str(base), "-m", "venv", str(venv)])
    site = _run([str(notebook), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"])
    own = _run([str(venv / "bin" / "python"), "-c",
                "import sysconfig; print(sysconfig.get_path('purelib'))"])
    Path(own.strip(), "notebook-env.pth").write_text(site)
    _run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
          f"jupyterhub=={version}"])
    (venv / ".installed").touch()
    return venv


def install_chp() -> tuple[str, Path]:
    """configurable-http-proxy's newest version from npm, installed once per version."""
    version = _run(["npm", "view", "configurable-http-proxy", "version"]).strip()
    folder = CACHE / f"chp-{version}"
    binary = folder / "node_modules" / ".bin" / "configurable-http-proxy"
    if not binary.exists():
        folder.mkdir(parents=True, exist_ok=True)
        _run(["npm", "install", "--prefix", str(folder), "--no-audit", "--no-fund",
              "--loglevel=error", f"configurable-http-proxy@{version}"])
    return version, binary


# --- the two peers --------------------------------------------------------------------


HUB_CONFIG = """\
c = get_config()  # noqa
c.Application.log_level = "WARN"
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {public_port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api_port}"
c.ConfigurableHTTPProxy.command = [{chp!r}]
c.ConfigurableHTTPProxy.pid_file = {pid_file!r}
c.JupyterHub.db_url = "sqlite:///{data}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "{data}/cookie_secret"
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = "{data}/homes/{{username}}"
c.Spawner.cmd = [{singleuser!r}]
c.Spawner.args = {args!r}
c.Spawner.start_timeout = 900
c.Spawner.http_timeout = 900
c.JupyterHub.concurrent_spawn_limit = 0
c.JupyterHub.services = [{{"name": "bench", "api_token": {token!r}}}]
c.JupyterHub.load_roles = [{{"name": "admin", "services": ["bench"]}}]
"""


@dataclass
class Peer:
    """What the measurements need of either peer."""

    name: str
    control: dict[str, list[psutil.Process]]  # the control plane's processes, by role
    get_one: str  # URLs and headers for the read load
    list_200: str
    headers: dict[str, str]


class Hub:
    """A JupyterHub with CHP and the simple local spawner, as one user of the host."""

    def __init__(self, venv: Path, chp: Path, data: Path) -> None:
        self.data = data
        self.token = secrets.token_hex(24)
        self.public = f"http://127.0.0.1:{free_port()}"
        self.hub_port = free_port()
        data.mkdir(parents=True)
        (data / "jupyterhub_config.py").write_text(HUB_CONFIG.format(
            public_port=self.public.rsplit(":", 1)[1], hub_port=self.hub_port,
            proxy_api_port=free_port(), chp=str(chp), pid_file=str(data / "proxy.pid"),
            data=data, singleuser=str(venv / "bin" / "jupyterhub-singleuser"),
            args=["--allow-root"] if os.geteuid() == 0 else [], token=self.token))
        self.log = (data / "hub.log").open("ab")
        self.proc = subprocess.Popen(
            [str(venv / "bin" / "jupyterhub"), "-f", str(data / "jupyterhub_config.py")],
            cwd=data, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        self.api = httpx.Client(base_url=f"http://127.0.0.1:{self.hub_port}/hub/api",
                                headers=self.headers, timeout=900)
        self.seen: set[psutil.Process] = set()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyterhub exited early; see {data / 'hub.log'}")
            with contextlib.suppress(httpx.HTTPError):
                if self.api.get("/").status_code == 200 and self._proxy():
                    return
            time.sleep(0.1)
        raise RuntimeError(f"jupyterhub did not answer; see {data / 'hub.log'}")

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}

    def _children(self) -> list[psutil.Process]:
        children = psutil.Process(self.proc.pid).children(recursive=True)
        self.seen.update(children)
        return children

    def _proxy(self) -> psutil.Process | None:
        return next((p for p in self._children() if "configurable-http-proxy" in _cmd(p)), None)

    def notebooks(self) -> list[psutil.Process]:
        """The single-user servers' top processes."""
        return [p for p in self._children() if "jupyterhub-singleuser" in _cmd(p)]

    def create_users(self, names: list[str]) -> None:
        for at in range(0, len(names), 100):
            self.api.post("/users", json={"usernames": names[at:at + 100]}).raise_for_status()

    def status_url(self, name: str) -> str:
        return f"{self.public}/user/{name}/api/status"

    async def request_start(self, client: httpx.AsyncClient, name: str) -> None:
        response = await client.post(f"/users/{name}/server")
        if response.status_code not in (201, 202):
            raise RuntimeError(f"JupyterHub refused to start {name}: {response.text}")

    def ready(self, names: set[str]) -> set[str]:
        users = self.api.get("/users", params={"state": "ready", "limit": 200}).json()
        return {u["name"] for u in users if u["name"] in names}

    def stop(self, names: list[str]) -> None:
        async def stop_all() -> None:
            async with httpx.AsyncClient(base_url=str(self.api.base_url), headers=self.headers,
                                         timeout=900) as client:
                await asyncio.gather(*(client.delete(f"/users/{n}/server") for n in names))

        asyncio.run(stop_all())
        _wait(lambda: not self.notebooks() and not any(
            _status(p) == psutil.STATUS_ZOMBIE for p in self._children()),
              "JupyterHub's notebooks to exit and be reaped")

    def control_plane(self) -> list[psutil.Process]:
        proxy = self._proxy()
        return [psutil.Process(self.proc.pid), *([proxy] if proxy else [])]

    def peer(self, names: list[str]) -> Peer:
        proxy = self._proxy()
        assert proxy is not None
        api = f"http://127.0.0.1:{self.hub_port}/hub/api"
        return Peer("JupyterHub", {"hub": [psutil.Process(self.proc.pid)], "proxy": [proxy]},
                    f"{api}/users/{names[len(names) // 2]}",
                    f"{api}/users?offset=0&limit=200", self.headers)

    def close(self) -> None:
        """SIGTERM (the hub stops its servers and proxy), then kill whatever is left."""
        self._children()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for proc in self.seen:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        self.api.close()
        self.log.close()


class Demanager:
    """``demanager serve`` through tests/server.py, with a member's API token."""

    def __init__(self, data: Path, backend: str, quota: int) -> None:
        env = {
            "DEMANAGER_INSTANCE_QUOTA": str(quota),
            "DEMANAGER_LOG_LEVEL": "warning",
            "DEMANAGER_RATE_LIMIT_PER_SECOND": "0",  # one token drives the whole load
            "DEMANAGER_START_TIMEOUT_SECONDS": "900",
            # The defaults, which tests/server.py shortens for tests:
            "DEMANAGER_RECONCILE_INTERVAL_SECONDS": str(
                Settings.model_fields["reconcile_interval_seconds"].default),
        }
        self.server = ServerProcess(data, backend=backend, env=env).start()
        self.token = self.server.make_token(self.server.project, "bench-member")
        self.api = self.server.client(self.token)
        self.headers = {"X-Auth-Token": self.token}

    def status_url(self, instance_id: str) -> str:
        return f"{self.server.url}/notebooks/{instance_id}/api/status"

    async def request_start(self, client: httpx.AsyncClient, name: str) -> str:
        response = await client.post("", json={"name": name, **BODY})
        response.raise_for_status()
        return str(response.json()["id"])

    def ready(self, ids: set[str]) -> set[str]:
        page = self.api.get("", params={"de_type": "Notebook", "limit": 200}).json()
        mine = [item for item in page["instances"] if item["id"] in ids]
        for item in mine:
            if item["status"].endswith("FAILED"):
                raise RuntimeError(f"{item['id']} failed: {item}")
        return {item["id"] for item in mine if item["status"] == "RUNNING"}

    def control_plane(self) -> list[psutil.Process]:
        assert self.server.proc is not None
        return [psutil.Process(self.server.proc.pid)]

    def notebook(self, instance_id: str) -> list[psutil.Process]:
        return [psutil.Process(pid) for pid in processes_of(instance_id)]

    def stop(self, ids: list[str]) -> None:
        for instance_id in ids:
            self.api.post(f"/{instance_id}/action", json={"action": "stop"})
        _wait(lambda: all(self.api.get(f"/{i}").json()["status"] == "STOPPED" for i in ids),
              "demanager's instances to stop")
        for instance_id in ids:
            self.api.delete(f"/{instance_id}")
        _wait(lambda: not any(processes_of(i) for i in ids), "demanager's notebooks to exit")

    def create_records(self, count: int) -> list[str]:
        ids = [str(self.api.post("", json={"name": f"rec-{i:05d}", **BODY}).json()["id"])
               for i in range(count)]
        running: dict[str, str | int] = {"de_type": "Notebook", "status": "RUNNING", "limit": 1}
        _wait(lambda: self.api.get("", params=running).json()["total_count"] >= count,
              "the records to be RUNNING")
        return ids

    def peer(self, ids: list[str]) -> Peer:
        assert self.server.proc is not None
        top = psutil.Process(self.server.proc.pid)
        base = f"{self.server.url}/v1/{self.server.project}/demanager/instances"
        return Peer("demanager", {"serve": [top, *top.children(recursive=True)]},
                    f"{base}/{ids[len(ids) // 2]}",
                    f"{base}?de_type=Notebook&offset=0&limit=200", self.headers)

    def close(self) -> None:
        self.api.close()
        self.server.close()


def _cmd(proc: psutil.Process) -> str:
    """The command line, or "" for a process gone or not yet reaped."""
    with contextlib.suppress(psutil.Error):
        return " ".join(proc.cmdline())
    return ""


def _status(proc: psutil.Process) -> str:
    with contextlib.suppress(psutil.Error):
        return str(proc.status())
    return ""


def _wait(predicate: Callable[[], bool], what: str, timeout: float = 900.0) -> None:
    deadline, delay = time.monotonic() + timeout, 0.05
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


# --- measurements ---------------------------------------------------------------------


def answers(url: str, headers: dict[str, str]) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(url, headers=headers, timeout=5.0).status_code == 200
    return False


def one_start(peer: Hub | Demanager, name: str) -> tuple[float, str]:
    """Seconds from the start request to ``/api/status`` answering through the proxy."""

    async def started() -> str:
        async with httpx.AsyncClient(base_url=str(peer.api.base_url), headers=peer.headers,
                                     timeout=900) as client:
            return str(await peer.request_start(client, name) or name)

    began = time.perf_counter()
    key = asyncio.run(started())
    url = peer.status_url(key)
    while not answers(url, peer.headers):
        if time.perf_counter() - began > 900:
            raise RuntimeError(f"{name} never answered at {url}")
        time.sleep(POLL)
    return time.perf_counter() - began, key


def many_starts(peer: Hub | Demanager,
                names: list[str]) -> tuple[float, list[float], list[str]]:
    """Seconds from sending ``len(names)`` start requests at once until every notebook
    answers through the proxy, each one's time, and their keys. Every 0.25 s one list
    request asks the control plane which are ready; each then has to answer
    ``/api/status`` too. (JupyterHub answers a start request only when the spawn is done
    or after 10 s, so the polling does not wait for the requests.)"""

    async def run() -> tuple[float, list[float], list[str]]:
        async with httpx.AsyncClient(base_url=str(peer.api.base_url), headers=peer.headers,
                                     timeout=900) as client:
            began = time.perf_counter()
            requests = {name: asyncio.create_task(peer.request_start(client, name))
                        for name in names}
            up: dict[str, float] = {}
            keys: dict[str, str] = {}
            while len(up) < len(names):
                for name, task in requests.items():
                    result = task.result() if task.done() else None  # raises if it failed
                    if name not in keys and (isinstance(peer, Hub) or task.done()):
                        keys[name] = str(result or name)
                pending = {keys[n] for n in keys if n not in up}
                ready = await asyncio.to_thread(peer.ready, pending) if pending else set()
                for name in [n for n in keys if keys[n] in ready]:
                    if await asyncio.to_thread(answers, peer.status_url(keys[name]),
                                               peer.headers):
                        up[name] = time.perf_counter() - began
                if time.perf_counter() - began > 900:
                    raise RuntimeError(f"{len(names) - len(up)} of {len(names)} never answered")
                if len(up) < len(names):
                    await asyncio.sleep(BATCH_POLL)
            await asyncio.gather(*requests.values())
            return max(up.values()), sorted(up.values()), [keys[n] for n in names]

    return asyncio.run(run())


def pss(processes: list[psutil.Process], *, descendants: bool = True) -> tuple[float, float]:
    """(PSS, RSS) in MiB of these processes and (by default) all their descendants."""
    tree = {p.pid: p for top in processes
            for p in [top, *(top.children(recursive=True) if descendants else [])]}
    total_pss = total_rss = 0
    for proc in tree.values():
        with contextlib.suppress(psutil.NoSuchProcess):
            info = proc.memory_full_info()
            total_pss += info.pss
            total_rss += info.rss
    return total_pss / MIB, total_rss / MIB


@dataclass
class Load:
    rate: float
    p50: float  # ms
    p99: float
    errors: int


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def load(url: str, headers: dict[str, str], connections: int, seconds: float) -> Load:
    """``wrk -t1`` at ``connections`` for ``seconds``, or the aiohttp client without wrk."""
    if not shutil.which("wrk"):
        return asyncio.run(_aiohttp_load(url, headers, connections, seconds))
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "60s",
            "--latency", url]
    for key, value in headers.items():
        argv += ["-H", f"{key}: {value}"]
    out = _run(argv)
    latency = dict(re.findall(r"^\s+(50|99)(?:\.0+)?%\s+(\S+)\s*$", out, re.M))
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if rate is None or len(latency) < 2:
        raise RuntimeError(f"unexpected output of wrk:\n{out}")
    failed = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    broken = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       out)
    errors = (int(failed.group(1)) if failed else 0) + (
        sum(int(n) for n in broken.groups()) if broken else 0)
    return Load(float(rate.group(1)), _ms(latency["50"]), _ms(latency["99"]), errors)


async def _aiohttp_load(url: str, headers: dict[str, str], connections: int,
                        seconds: float) -> Load:
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(headers=headers, connector=connector,
                                     trust_env=False) as client:
        end = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal errors
            while (began := time.perf_counter()) < end:
                async with client.get(url) as response:
                    await response.read()
                latencies.append(time.perf_counter() - began)
                errors += response.status != 200

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        took = time.perf_counter() - began
    ordered = sorted(latencies)
    return Load(len(ordered) / took, ordered[len(ordered) // 2] * 1000,
                ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000, errors)


# --- the run --------------------------------------------------------------------------


@dataclass
class Row:
    what: str
    hub: str
    ours: str
    ratio: float  # how many times better demanager is: > 1 better, < 1 worse


def _s(seconds: float) -> str:
    return f"{seconds:.2f} s"


def _spread(times: list[float]) -> str:
    return f"{times[0]:.1f} / {statistics.median(times):.1f} / {times[-1]:.1f} s"


def cpu(processes: list[psutil.Process], *, control: bool = False) -> float:
    """CPU seconds of a notebook's processes and their descendants; or, with
    ``control``, of the control plane's processes alone (their descendants are the
    notebooks) plus the children they have waited for (a server's helper commands)."""
    tree = {p.pid: p for top in processes
            for p in [top, *([] if control else top.children(recursive=True))]}
    total = 0.0
    for proc in tree.values():
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
            if control:
                total += times.children_user + times.children_system
    return total


def _load_text(result: Load) -> str:
    bad = f", {result.errors} non-2xx" if result.errors else ""
    return f"{result.rate:.0f} req/s, p50 {result.p50:.1f} ms, p99 {result.p99:.1f} ms{bad}"


def starts(hub: Hub, ours: Demanager, concurrent: list[int], rows: list[Row],
           figures: Figures, root: Path) -> None:
    bare_dir = root / "bare"
    bare_dir.mkdir()
    bare_process(bare_dir)  # warms the file-system cache for all three
    figures["bare_start"] = bare_process(bare_dir)
    print(f"  a bare jupyter lab start: {_s(figures['bare_start'])}", flush=True)
    hub.create_users(["solo"])
    took_hub, _ = one_start(hub, "solo")
    took_ours, solo = one_start(ours, "solo")
    print(f"  one start: JupyterHub {_s(took_hub)}, demanager {_s(took_ours)}", flush=True)
    rows.append(Row("one start -> /api/status via proxy", _s(took_hub), _s(took_ours),
                    took_hub / took_ours))
    figures["one_start"] = took_ours
    time.sleep(IDLE)
    mem_hub, rss_hub = pss(hub.notebooks())
    mem_ours, rss_ours = pss(ours.notebook(solo))
    rows.append(Row("idle notebook PSS (RSS)", f"{mem_hub:.0f} MiB ({rss_hub:.0f})",
                    f"{mem_ours:.0f} MiB ({rss_ours:.0f})", mem_hub / mem_ours))
    figures["idle_pss"] = mem_ours
    hub.stop(["solo"])
    ours.stop([solo])
    for count in concurrent:
        names = [f"c{count}-{i}" for i in range(count)]
        hub.create_users(names)
        before = cpu(hub.control_plane(), control=True)
        took_hub, each_hub, _ = many_starts(hub, names)
        cpu_hub = (cpu(hub.notebooks()), cpu(hub.control_plane(), control=True) - before)
        hub.stop(names)
        before = cpu(ours.control_plane(), control=True)
        took_ours, each_ours, ids = many_starts(ours, names)
        cpu_ours = (cpu([p for i in ids for p in ours.notebook(i)]),
                    cpu(ours.control_plane(), control=True) - before)
        ours.stop(ids)
        print(f"  {count} concurrent, first / median / last up: JupyterHub {_spread(each_hub)},"
              f" demanager {_spread(each_ours)}", flush=True)
        print(f"    CPU seconds per start, notebook + control plane: JupyterHub "
              f"{cpu_hub[0] / count:.2f} + {cpu_hub[1] / count:.2f}, demanager "
              f"{cpu_ours[0] / count:.2f} + {cpu_ours[1] / count:.2f}", flush=True)
        rows.append(Row(f"{count} concurrent starts, all up", f"{count / took_hub:.2f}/s "
                        f"({_s(took_hub)})", f"{count / took_ours:.2f}/s ({_s(took_ours)})",
                        took_hub / took_ours))
        figures[f"starts_per_s_{count}"] = count / took_ours


def control_planes(hub: Peer, ours: Peer, what: str, rows: list[Row]) -> float:
    """Adds the row of each peer's control-plane RSS; returns demanager's, in MiB."""
    rss: dict[str, float] = {}
    texts: dict[str, str] = {}
    for peer in (hub, ours):
        parts = {role: pss(procs, descendants=False) for role, procs in peer.control.items()}
        rss[peer.name] = sum(r for _, r in parts.values())
        each = " + ".join(f"{role} {r:.0f}" for role, (_, r) in parts.items())
        texts[peer.name] = (f"{rss[peer.name]:.0f} MiB"
                            + (f" ({each})" if len(parts) > 1 else "")
                            + f", PSS {sum(p for p, _ in parts.values()):.0f}")
    rows.append(Row(what, texts[hub.name], texts[ours.name], rss[hub.name] / rss[ours.name]))
    return rss[ours.name]


def reads(hub: Peer, ours: Peer, seconds: float, rows: list[Row], figures: Figures) -> None:
    figures["control_rss"] = control_planes(hub, ours, "control plane RSS", rows)
    for key, what, hub_url, our_url in (
        ("get_one", "GET one, c=16", hub.get_one, ours.get_one),
        ("list", "GET a page of 200, c=16", hub.list_200, ours.list_200),
    ):
        for url, headers in ((hub_url, hub.headers), (our_url, ours.headers)):
            httpx.get(url, headers=headers, timeout=60).raise_for_status()  # fails loudly
        a = load(hub_url, hub.headers, 16, seconds)
        b = load(our_url, ours.headers, 16, seconds)
        print(f"  {what}: JupyterHub {_load_text(a)}; demanager {_load_text(b)}", flush=True)
        rows.append(Row(what, _load_text(a), _load_text(b), b.rate / a.rate))
        figures[f"{key}_ratio"] = b.rate / a.rate
        figures[f"{key}_p50"], figures[f"{key}_p99"] = b.p50, b.p99
    # What the reads left behind: the store's and the presenter's remembered instances.
    figures["control_rss_after"] = control_planes(hub, ours, "  after the reads", rows)


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    memory = psutil.virtual_memory().total / 1024**3
    load1, load5, _ = os.getloadavg()
    return (f"{os.cpu_count()} cores, {model}, {memory:.0f} GiB, Python "
            f"{platform.python_version()}; load average at start {load1:.1f} / {load5:.1f}")


@contextlib.contextmanager
def workspace() -> Iterator[Path]:
    """A fresh temp dir every user may traverse (instance uids reach their volumes)."""
    root = Path(tempfile.mkdtemp(prefix="dm-bench-peers-"))
    root.chmod(0o711)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jupyterhub", help="JupyterHub version (default: the latest)")
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--concurrent", default="10,30", help="comma-separated batch sizes")
    parser.add_argument("--seconds", type=float, default=10.0, help="of each read load")
    args = parser.parse_args()
    concurrent = [int(n) for n in args.concurrent.split(",") if n]

    notebook = notebook_python() or Path(sys.executable)
    version = args.jupyterhub or latest_jupyterhub()
    venv = install_jupyterhub(version, notebook)
    chp_version, chp = install_chp()
    lab = _run([str(notebook), "-c", "import jupyterlab; print(jupyterlab.__version__)"])
    print(f"machine: {machine()}")
    print(f"JupyterHub {version} + configurable-http-proxy {chp_version}; demanager "
          f"{demanager.__version__}; JupyterLab {lab.strip()} ({notebook}) on both; "
          f"reads with {'wrk -t1' if shutil.which('wrk') else 'aiohttp'}", flush=True)

    rows: list[Row] = []
    figures: Figures = {}
    with workspace() as root:
        hub = Hub(venv, chp, root / "hub")
        try:
            ours = Demanager(root / "process", "process", max(concurrent, default=1) + 10)
            try:
                starts(hub, ours, concurrent, rows, figures, root)
            finally:
                ours.close()
            existing = len(hub.api.get("/users", params={"limit": 200}).json())
            users = [f"rec-{i:05d}" for i in range(args.records - existing)]
            hub.create_users(users)
            fake = Demanager(root / "fake", "fake", args.records + 10)
            try:
                ids = fake.create_records(args.records)
                print(f"  {args.records} records in each store", flush=True)
                reads(hub.peer(users), fake.peer(ids), args.seconds, rows, figures)
            finally:
                fake.close()
        finally:
            hub.close()

    print()
    print(f"{'measure':<36} {'JupyterHub':<44} {'demanager':<44} ratio")
    for row in rows:
        print(f"{row.what:<36} {row.hub:<44} {row.ours:<44} {row.ratio:.2f}x")
    print("ratio: how many times better demanager is (time, memory: JupyterHub / demanager; "
          "rates: demanager / JupyterHub)")
    print()
    for line in report(figures):
        print(line)


if __name__ == "__main__":
    main()
