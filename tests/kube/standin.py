"""A stand-in for a Kubernetes API server, with a fake kubelet: a TEST DOUBLE, not a cluster.

No cluster can run where demanager's tests run, so this serves the part of the
Kubernetes API that the Kubernetes backend uses, with the semantics the backend
relies on, and runs "pods" as loopback HTTP servers that look like Jupyter:

* ``GET /version``; ``GET /api/v1/namespaces/{ns}`` (the namespaces given at start);
  discovery (``/api``, ``/apis``, ``/api/v1``), enough for ``kubectl -s URL``;
* core/v1 ``pods``, ``persistentvolumeclaims``, ``services`` and ``secrets`` in a
  namespace: create (POST; 409 AlreadyExists and 422 Invalid with Status bodies),
  get, list with ``labelSelector`` (equality and set-based), delete (with
  ``propagationPolicy`` Background, Foreground or Orphan and ``gracePeriodSeconds``;
  owners' dependents are garbage-collected through ``ownerReferences``);
* ``metadata.uid``, ``creationTimestamp`` and ``resourceVersion`` from one global
  counter; watches (``?watch=true&resourceVersion=…&timeoutSeconds=…``) stream
  ADDED, MODIFIED and DELETED events as newline-delimited JSON, resume from any
  version still in a bounded history, and answer an older one with an ERROR event
  carrying a 410 Expired Status, as the API server's watch cache does;
* ``POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews``: allowed, unless
  ``--deny verb:resource`` names the permission;
* test-only: ``POST /standin/pods/{ns}/{name}/kill`` ends the pod's container.

``controllers.py`` holds the garbage collector, the volume binder and the kubelet,
``notebook.py`` the Jupyter look-alike, ``store.py`` the objects and watch events.
What it does not do: authentication, admission, patch and replace, other resources,
field selectors, real scheduling or resource accounting, container restarts.

Run it: ``python -m tests.kube.standin --port 8001 --state /tmp/standin``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.kube.controllers import Controllers
from tests.kube.store import KINDS, ApiProblem, Store, parse_selector

log = logging.getLogger("standin")

WATCH_DEFAULT_SECONDS = 1800
VERSION = {"major": "1", "minor": "33", "gitVersion": "v1.33.0-standin", "platform": "linux/amd64"}


def _json(body: Any, status: int = 200) -> web.Response:
    # Exactly application/json, as the API server says it (lightkube checks).
    return web.Response(body=json.dumps(body).encode(), status=status,
                        headers={"Content-Type": "application/json"})


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _problems(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiProblem as problem:
        return _json(problem.status(), problem.code)
    except web.HTTPNotFound:
        return _json(ApiProblem(404, "NotFound", "the server could not find the requested "
                                "resource").status(), 404)
    except web.HTTPMethodNotAllowed:
        return _json(ApiProblem(405, "MethodNotAllowed", f"the server does not allow this "
                                f"method on the requested resource ({request.method})").status(),
                     405)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return _json(ApiProblem(400, "BadRequest", f"the body is no JSON: {exc}").status(), 400)


class StandIn:
    def __init__(
        self,
        state_dir: Path,
        *,
        namespaces: tuple[str, ...] = ("demanager",),
        deny: tuple[str, ...] = (),
        history: int = 1000,
        images: tuple[str, ...] = (),
        pod_network: str = "127.0.1.0/24",
        node_labels: dict[str, str] | None = None,
        start_seconds: float = 1.0,
    ) -> None:
        self.store = Store(namespaces, history)
        self.controllers = Controllers(self.store, state_dir, pod_network=pod_network,
                                       images=images, node_labels=node_labels,
                                       start_seconds=start_seconds)
        self.deny = {entry.lower() for entry in deny}
        self._runner: web.AppRunner | None = None
        self.url = ""

    def app(self) -> web.Application:
        app = web.Application(middlewares=[_problems])
        app.router.add_get("/version", self._version)
        app.router.add_get("/api", self._api_versions)
        app.router.add_get("/apis", self._api_groups)
        app.router.add_get("/api/v1", self._api_resources)
        app.router.add_get("/apis/authorization.k8s.io/v1", self._authorization_resources)
        app.router.add_get("/api/v1/namespaces/{name}", self._namespace)
        base = "/api/v1/namespaces/{ns}/{plural}"
        app.router.add_get(base, self._list)
        app.router.add_post(base, self._create)
        app.router.add_get(base + "/{name}", self._get)
        app.router.add_delete(base + "/{name}", self._delete)
        app.router.add_post("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                            self._review)
        app.router.add_post("/standin/pods/{ns}/{name}/kill", self._kill)
        app.on_shutdown.append(self._shutdown)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False,
                                     shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = self._runner.addresses[0][1]
        self.url = f"http://{host}:{bound}"
        self.controllers.start()
        return self.url

    async def stop(self) -> None:
        self.store.close_watches()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.controllers.stop()

    async def _shutdown(self, app: web.Application) -> None:
        self.store.close_watches()

    # --- routes -------------------------------------------------------------------------

    def _plural(self, request: web.Request) -> str:
        plural = request.match_info["plural"]
        if plural not in KINDS:
            raise web.HTTPNotFound()
        return plural

    async def _version(self, request: web.Request) -> web.Response:
        return _json(VERSION)

    # Discovery, enough for kubectl (``kubectl -s URL get pods -n demanager``).

    async def _api_versions(self, request: web.Request) -> web.Response:
        return _json({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": request.host}]})

    async def _api_groups(self, request: web.Request) -> web.Response:
        group = {"name": "authorization.k8s.io",
                 "versions": [{"groupVersion": "authorization.k8s.io/v1", "version": "v1"}],
                 "preferredVersion": {"groupVersion": "authorization.k8s.io/v1",
                                      "version": "v1"}}
        return _json({"kind": "APIGroupList", "apiVersion": "v1", "groups": [group]})

    async def _api_resources(self, request: web.Request) -> web.Response:
        verbs = ["create", "delete", "get", "list", "watch"]
        resources = [{"name": plural, "singularName": kind.lower(), "namespaced": True,
                      "kind": kind, "verbs": verbs} for plural, kind in KINDS.items()]
        resources.append({"name": "namespaces", "singularName": "namespace",
                          "namespaced": False, "kind": "Namespace", "verbs": ["get"]})
        return _json({"kind": "APIResourceList", "groupVersion": "v1", "resources": resources})

    async def _authorization_resources(self, request: web.Request) -> web.Response:
        review = {"name": "selfsubjectaccessreviews", "singularName": "selfsubjectaccessreview",
                  "namespaced": False, "kind": "SelfSubjectAccessReview", "verbs": ["create"]}
        return _json({"kind": "APIResourceList", "groupVersion": "authorization.k8s.io/v1",
                      "resources": [review]})

    async def _namespace(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        self.store.check_namespace(name)
        return _json(self.store.namespaces[name])

    async def _create(self, request: web.Request) -> web.Response:
        plural = self._plural(request)
        body = await request.json()
        if not isinstance(body, dict):
            raise ApiProblem(400, "BadRequest", "the body must be an object")
        created = self.store.create(plural, request.match_info["ns"], body)
        return _json(created, 201)

    async def _get(self, request: web.Request) -> web.Response:
        plural = self._plural(request)
        ns, name = request.match_info["ns"], request.match_info["name"]
        self.store.check_namespace(ns)
        return _json(self.store.require(plural, ns, name))

    async def _delete(self, request: web.Request) -> web.Response:
        plural = self._plural(request)
        ns, name = request.match_info["ns"], request.match_info["name"]
        options: dict[str, Any] = {}
        if request.can_read_body:
            with contextlib.suppress(json.JSONDecodeError):
                options = await request.json() or {}
        policy = request.query.get("propagationPolicy") or options.get("propagationPolicy")
        if policy not in (None, "Background", "Foreground", "Orphan"):
            raise ApiProblem(400, "BadRequest", f"invalid propagationPolicy {policy!r}")
        grace = request.query.get("gracePeriodSeconds", options.get("gracePeriodSeconds"))
        self.store.check_namespace(ns)
        deleted = self.store.delete(plural, ns, name, policy=policy,
                                    grace=None if grace is None else int(grace))
        return _json(deleted)

    async def _list(self, request: web.Request) -> web.StreamResponse:
        plural = self._plural(request)
        ns = request.match_info["ns"]
        selector = parse_selector(request.query.get("labelSelector"))
        if request.query.get("watch") in ("true", "1"):
            return await self._watch(request, plural, ns, selector)
        return _json(self.store.list(plural, ns, selector))

    async def _watch(self, request: web.Request, plural: str, ns: str,
                     selector: Any) -> web.StreamResponse:
        given = request.query.get("resourceVersion")
        since = int(given) if given and given != "0" else None
        seconds = float(request.query.get("timeoutSeconds") or WATCH_DEFAULT_SECONDS)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        try:
            watch = self.store.watch(plural, ns, selector, since)
        except ApiProblem as problem:
            if problem.code != 410:
                raise
            await response.prepare(request)
            await response.write(_line({"type": "ERROR", "object": problem.status()}))
            return response
        await response.prepare(request)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        try:
            while (left := deadline - loop.time()) > 0:
                try:
                    event = await asyncio.wait_for(watch.queue.get(), left)
                except TimeoutError:
                    break
                if event is None:
                    break
                await response.write(_line(event.wire()))
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.store.unwatch(watch)
        return response

    async def _review(self, request: web.Request) -> web.Response:
        body = await request.json()
        attributes = (body.get("spec") or {}).get("resourceAttributes") or {}
        verb, resource = attributes.get("verb", ""), attributes.get("resource", "")
        denied = f"{verb}:{resource}".lower() in self.deny
        status: dict[str, Any] = {"allowed": not denied}
        if denied:
            status["reason"] = f"the stand-in was told to deny {verb} {resource}"
        return _json({**body, "status": status}, 201)

    async def _kill(self, request: web.Request) -> web.Response:
        pod = await self.controllers.kill(request.match_info["ns"], request.match_info["name"])
        return _json(pod)


def _line(event: dict[str, Any]) -> bytes:
    return json.dumps(event).encode() + b"\n"


# --- the command ------------------------------------------------------------------------


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.kube.standin",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--state", type=Path, required=True,
                        help="where the volumes' folders live")
    parser.add_argument("--namespace", action="append", default=[],
                        help="a namespace that exists (repeatable; default: demanager)")
    parser.add_argument("--deny", action="append", default=[],
                        help="verb:resource that SelfSubjectAccessReview denies (repeatable)")
    parser.add_argument("--history", type=int, default=1000,
                        help="watch events kept for resuming; older versions get 410")
    parser.add_argument("--image", action="append", default=[],
                        help="glob of pullable images (repeatable; default: any image whose "
                        "name lacks 'missing')")
    parser.add_argument("--pod-network", default="127.0.1.0/24",
                        help="loopback network the pods' addresses come from")
    parser.add_argument("--node-label", action="append", default=[],
                        help="key=value label of the one node (repeatable)")
    parser.add_argument("--start-seconds", type=float, default=1.0,
                        help="how long a container takes to start once its pod is scheduled")
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    args.state.mkdir(parents=True, exist_ok=True)
    standin = StandIn(
        args.state,
        namespaces=tuple(args.namespace) or ("demanager",),
        deny=tuple(args.deny),
        history=args.history,
        images=tuple(args.image),
        pod_network=args.pod_network,
        node_labels=dict(label.split("=", 1) for label in args.node_label),
        start_seconds=args.start_seconds,
    )
    url = await standin.start(args.host, args.port)
    print(f"kubernetes stand-in listening on {url}", flush=True)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()
    await standin.stop()


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(_serve(_arguments(argv)))


if __name__ == "__main__":
    main()
