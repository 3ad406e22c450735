"""What does the proxy cost? Direct to a JupyterLab instance versus through demanager.

Prints, in one run:

* requests/s and p50/p99 latency of ``GET /api/status`` straight to the instance's
  Jupyter server and through ``/notebooks/{id}/`` on the demanager server (process
  backend, a member's X-Auth-Token checked against the store on every request),
  and their throughput ratio
  (target: proxy >= 0.7 x direct);
* the round-trip time of a kernel WebSocket message (``kernel_info_request`` to its
  reply), direct and through the proxy.

Rounds alternate between direct and proxied so machine drift hits both alike.
Loopback only; everything started is stopped.

    .venv/bin/python bench/proxy.py [--requests 1500] [--concurrency 8] [--messages 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import psutil
from websockets.sync.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.server import ServerProcess, wait_for_status

BODY = {
    "name": "bench-proxy",
    "profile_id": "Multi-Engine 1.0 (python3)-cpu",
    "flavor": "modelarts.vm.cpu.2u",
    "spec": {"storage": {"type": "evs"}},
}
ROUNDS = 3


async def _load(base: str, headers: dict[str, str], count: int,
                concurrency: int) -> tuple[float, list[float]]:
    """(seconds, per-request latencies) for ``count`` GETs from ``concurrency`` workers.

    The load comes from aiohttp (a C parser): on a small machine the load generator
    shares the cores with both servers, and a heavier client would measure itself."""
    latencies: list[float] = []
    remaining = count
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(base_url=base, headers=headers, connector=connector,
                                     trust_env=False) as client:
        async with client.get("api/status") as warm:  # a connection before the clock
            await warm.read()

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                began = time.perf_counter()
                async with client.get("api/status") as response:
                    body = await response.read()
                latencies.append(time.perf_counter() - began)
                assert response.status == 200, body

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - began, latencies


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def _kernel_rtt(url: str, headers: dict[str, str], messages: int) -> list[float]:
    """Round trips of kernel_info_request -> kernel_info_reply on one socket."""
    samples = []
    with connect(url, additional_headers=headers, max_size=None) as ws:
        for _ in range(messages + 5):
            msg_id = uuid.uuid4().hex
            request = {
                "header": {"msg_id": msg_id, "msg_type": "kernel_info_request",
                           "session": "bench", "username": "bench", "version": "5.3",
                           "date": ""},
                "parent_header": {}, "metadata": {}, "content": {}, "buffers": [],
                "channel": "shell",
            }
            began = time.perf_counter()
            ws.send(json.dumps(request))
            while True:
                reply: dict[str, Any] = json.loads(ws.recv())
                if (reply.get("msg_type") == "kernel_info_reply"
                        and reply.get("parent_header", {}).get("msg_id") == msg_id):
                    break
            samples.append(time.perf_counter() - began)
    return samples[5:]  # the first few warm the kernel up


def _cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1500, help="GETs per side per round")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--messages", type=int, default=200, help="WebSocket round trips")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-proxy-") as tmp:
        server = ServerProcess(Path(tmp), backend="process").start()
        try:
            # A member's API token: checked against the store on every request, as in use.
            member = server.make_token(server.project, "bench-member")
            with server.client(member) as api:
                instance_id = api.post("", json=BODY).json()["id"]
                wait_for_status(api, instance_id, "RUNNING")
            record = json.loads((Path(tmp) / "runtime" / instance_id / "server.json").read_text())
            direct = f"http://127.0.0.1:{record['port']}{record['base_url']}"
            direct_headers = {"Authorization": f"token {record['token']}"}
            proxied = f"{server.url}/notebooks/{instance_id}/"
            proxied_headers = {"X-Auth-Token": member}

            times = {"direct": 0.0, "proxy": 0.0}
            lat: dict[str, list[float]] = {"direct": [], "proxy": []}
            assert server.proc is not None
            demanager = psutil.Process(server.proc.pid)
            jupyter = psutil.Process(int(record["pid"]))
            cpu = {"demanager": 0.0, "jupyter": 0.0}
            for _ in range(ROUNDS):
                for side, base, headers in (("direct", direct, direct_headers),
                                            ("proxy", proxied, proxied_headers)):
                    before = _cpu(demanager), _cpu(jupyter)
                    took, samples = asyncio.run(
                        _load(base, headers, args.requests, args.concurrency))
                    if side == "proxy":
                        cpu["demanager"] += _cpu(demanager) - before[0]
                        cpu["jupyter"] += _cpu(jupyter) - before[1]
                    times[side] += took
                    lat[side] += samples
            rate = {side: len(lat[side]) / times[side] for side in times}
            print(f"GET /api/status, {args.concurrency} concurrent, "
                  f"{ROUNDS}x{args.requests} per side, alternating")
            for side in ("direct", "proxy"):
                print(f"  {side:6}  {rate[side]:7.1f} req/s  p50 {_pct(lat[side], 0.5):6.2f} ms"
                      f"  p99 {_pct(lat[side], 0.99):6.2f} ms")
            print(f"  ratio proxy / direct throughput  {rate['proxy'] / rate['direct']:.2f}"
                  "  (target >= 0.70)")
            count = len(lat["proxy"])
            print(f"  CPU per proxied request: demanager {cpu['demanager'] / count * 1000:.2f} ms,"
                  f" jupyter {cpu['jupyter'] / count * 1000:.2f} ms  (cores on this machine:"
                  f" {psutil.cpu_count()})")

            with httpx.Client(headers=proxied_headers, timeout=60.0) as client:
                kernel = client.post(f"{proxied}api/kernels", json={"name": "python3"}).json()
            channels = f"api/kernels/{kernel['id']}/channels"
            rtt = {"direct": [], "proxy": []}  # type: dict[str, list[float]]
            for _ in range(2):
                rtt["direct"] += _kernel_rtt(direct.replace("http", "ws", 1) + channels,
                                             direct_headers, args.messages // 2)
                rtt["proxy"] += _kernel_rtt(proxied.replace("http", "ws", 1) + channels,
                                            proxied_headers, args.messages // 2)
            print(f"kernel WebSocket round trip (kernel_info), {len(rtt['direct'])} per side")
            for side in ("direct", "proxy"):
                print(f"  {side:6}  p50 {statistics.median(rtt[side]) * 1000:6.2f} ms"
                      f"  p99 {_pct(rtt[side], 0.99):6.2f} ms")
            with server.client() as api:
                api.post(f"/{instance_id}/action", json={"action": "stop"})
                wait_for_status(api, instance_id, "STOPPED")
        finally:
            server.close()


if __name__ == "__main__":
    main()
