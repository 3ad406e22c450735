"""The stand-in's control loops: garbage collector, volume binder and a fake kubelet.

They run in the stand-in's event loop after every write (and on a short tick):

* garbage collector: an object whose owners (``ownerReferences``) are all gone is
  deleted; an owner deleted in the foreground keeps its ``foregroundDeletion``
  finalizer until its dependents are gone;
* volume binder: a claim is Bound at once, to a folder ``volumes/{ns}/{name}-{uid}``
  of the state dir; a deleted claim keeps its ``pvc-protection`` finalizer while a
  pod that has not ended uses it, then goes, and its folder with it;
* kubelet (one node, ``standin-node``): a pending pod is scheduled when its node
  selector fits the node's labels and its claims are bound; its image is "pulled"
  unless its name contains ``missing`` or it is outside the allow-list (then
  ErrImagePull, then ImagePullBackOff, and the pod stays Pending); its environment is
  resolved (a missing Secret is CreateContainerConfigError, retried); after
  ``start_seconds`` (ContainerCreating meanwhile, as a container takes a moment to
  start) it runs: a
  loopback address of its own (127.0.1.N by default) as ``podIP``, and a
  ``NotebookServer`` on that address and the container's port. A deleted pod's
  server is stopped, then the pod goes (DELETED). ``kill`` ends the container as an
  OOM kill would: phase Failed, exit code 137.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fnmatch
import ipaddress
import logging
import shutil
from pathlib import Path
from typing import Any

from tests.kube.notebook import NotebookServer
from tests.kube.store import FOREGROUND, PVC_PROTECTION, Store, now

log = logging.getLogger(__name__)

NODE = "standin-node"
TICK_SECONDS = 0.2


class Controllers:
    def __init__(
        self,
        store: Store,
        state_dir: Path,
        *,
        pod_network: str = "127.0.1.0/24",
        images: tuple[str, ...] = (),
        node_labels: dict[str, str] | None = None,
        start_seconds: float = 1.0,
    ) -> None:
        self.store = store
        self.start_seconds = start_seconds
        self.volumes = state_dir / "volumes"
        self.images = images
        self.node_labels = {"kubernetes.io/hostname": NODE, **(node_labels or {})}
        network = ipaddress.ip_network(pod_network)
        self._addresses = [str(a) for a in network.hosts()][1:]  # .1 is often the host's
        self._next_address = 0
        self.servers: dict[str, NotebookServer] = {}
        """The running "containers", by pod uid."""
        self._pulls: dict[str, int] = {}
        self._scheduled: dict[str, float] = {}
        """When each pod was scheduled (loop time), by uid: containers take a while."""
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="standin-controllers")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for server in list(self.servers.values()):
            await server.stop()
        self.servers.clear()

    async def _loop(self) -> None:
        while True:
            self.store.changed.clear()
            try:
                await self.reconcile()
            except Exception:  # a bug here must not stop the cluster
                log.exception("a control loop failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.store.changed.wait(), TICK_SECONDS)

    async def reconcile(self) -> None:
        self._collect_garbage()
        self._bind_volumes()
        for _, pod in self.store.all("pods"):
            await self._kubelet(pod)

    # --- garbage collector --------------------------------------------------------------

    def _collect_garbage(self) -> None:
        store = self.store
        uids = {obj["metadata"]["uid"]: obj for _, obj in store.all()}
        for plural, obj in store.all():
            meta = obj["metadata"]
            refs = meta.get("ownerReferences") or []
            if not refs or meta.get("deletionTimestamp"):
                continue
            owners = [uids.get(ref.get("uid")) for ref in refs]
            gone = all(owner is None for owner in owners)
            foreground = any(
                owner is not None and FOREGROUND in (owner["metadata"].get("finalizers") or [])
                for owner in owners
            )
            if gone or foreground:
                store.delete(plural, meta["namespace"], meta["name"], policy="Background")
        for plural, obj in store.all():
            meta = obj["metadata"]
            if FOREGROUND in (meta.get("finalizers") or []) and not self._dependents(meta["uid"]):
                self._finalize(plural, obj, FOREGROUND)

    def _dependents(self, uid: str) -> list[dict[str, Any]]:
        return [o for _, o in self.store.all()
                if any(r.get("uid") == uid for r in o["metadata"].get("ownerReferences") or [])]

    def _finalize(self, plural: str, obj: dict[str, Any], finalizer: str) -> None:
        """Drop ``finalizer``; a deleted object with none left goes (pods: once ended)."""
        meta = obj["metadata"]

        def drop(o: dict[str, Any]) -> None:
            left = [f for f in o["metadata"].get("finalizers") or [] if f != finalizer]
            if left:
                o["metadata"]["finalizers"] = left
            else:
                o["metadata"].pop("finalizers", None)

        self.store.update(plural, meta["namespace"], meta["name"], drop)
        if meta.get("deletionTimestamp") and not meta.get("finalizers") and (
            plural != "pods" or meta["uid"] not in self.servers
        ):
            self._remove(plural, obj)

    def _remove(self, plural: str, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        self.store.remove(plural, meta["namespace"], meta["name"])
        if plural == "persistentvolumeclaims":
            shutil.rmtree(self.volume_dir(obj), ignore_errors=True)

    # --- volumes ------------------------------------------------------------------------

    def volume_dir(self, claim: dict[str, Any]) -> Path:
        meta = claim["metadata"]
        return self.volumes / meta["namespace"] / f"{meta['name']}-{meta['uid']}"

    def _bind_volumes(self) -> None:
        for plural, claim in self.store.all("persistentvolumeclaims"):
            meta = claim["metadata"]
            if meta.get("deletionTimestamp"):
                if PVC_PROTECTION in (meta.get("finalizers") or []) and not self._in_use(claim):
                    self._finalize(plural, claim, PVC_PROTECTION)
                continue
            if claim.get("status", {}).get("phase") != "Bound":
                self.volume_dir(claim).mkdir(parents=True, exist_ok=True)

                def bind(o: dict[str, Any]) -> None:
                    o["spec"]["volumeName"] = f"pvc-{o['metadata']['uid']}"
                    o["status"] = {
                        "phase": "Bound",
                        "accessModes": o["spec"].get("accessModes", ["ReadWriteOnce"]),
                        "capacity": dict(o["spec"].get("resources", {}).get("requests", {})),
                    }

                self.store.update(plural, meta["namespace"], meta["name"], bind)

    def _in_use(self, claim: dict[str, Any]) -> bool:
        name = claim["metadata"]["name"]
        for _, pod in self.store.all("pods"):
            if pod["metadata"]["namespace"] != claim["metadata"]["namespace"]:
                continue
            if pod["status"].get("phase") in ("Succeeded", "Failed"):
                continue
            if name in _claims(pod):
                return True
        return False

    # --- kubelet ------------------------------------------------------------------------

    async def _kubelet(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        uid = meta["uid"]
        if meta.get("deletionTimestamp"):
            self._scheduled.pop(uid, None)
            self._pulls.pop(uid, None)
            server = self.servers.pop(uid, None)
            if server is not None:
                await server.stop()
            if not meta.get("finalizers") and self._current(pod):
                self._remove("pods", pod)
            return
        phase = pod["status"].get("phase")
        if phase != "Pending" or uid in self.servers:
            return
        if not pod["spec"].get("nodeName"):
            problem = self._unschedulable(pod)
            if problem is not None:
                self._set_status(pod, {"conditions": [_condition(
                    "PodScheduled", "False", "Unschedulable", problem)]})
                return
            self.store.update("pods", meta["namespace"], meta["name"],
                              lambda o: o["spec"].update(nodeName=NODE))
        container = pod["spec"]["containers"][0]
        image = container["image"]
        if not self._pullable(image):
            self._pulls[uid] = self._pulls.get(uid, 0) + 1
            if self._pulls[uid] == 1:
                self._waiting(pod, "ErrImagePull", f"failed to pull and unpack image "
                              f'"{image}": rpc error: code = NotFound desc = {image}: not found')
            else:
                self._waiting(pod, "ImagePullBackOff", f'Back-off pulling image "{image}"')
            return
        try:
            token = self._env(pod, container).get("JUPYTER_TOKEN", "")
        except LookupError as exc:
            self._waiting(pod, "CreateContainerConfigError", str(exc.args[0]))
            return
        clock = asyncio.get_running_loop().time()
        if clock - self._scheduled.setdefault(uid, clock) < self.start_seconds:
            self._waiting(pod, "ContainerCreating", "")
            return
        self._scheduled.pop(uid, None)
        await self._run(pod, container, token)

    def _unschedulable(self, pod: dict[str, Any]) -> str | None:
        wanted = pod["spec"].get("nodeSelector") or {}
        if any(self.node_labels.get(k) != v for k, v in wanted.items()):
            return ("0/1 nodes are available: 1 node(s) didn't match Pod's node "
                    "affinity/selector.")
        for claim_name in _claims(pod):
            claim = self.store.get("persistentvolumeclaims", pod["metadata"]["namespace"],
                                   claim_name)
            if claim is None or claim["metadata"].get("deletionTimestamp"):
                return f'persistentvolumeclaim "{claim_name}" not found'
            if claim.get("status", {}).get("phase") != "Bound":
                return f'pod has unbound immediate PersistentVolumeClaims ("{claim_name}")'
        return None

    def _pullable(self, image: str) -> bool:
        if "missing" in image:
            return False
        return not self.images or any(fnmatch.fnmatchcase(image, p) for p in self.images)

    def _env(self, pod: dict[str, Any], container: dict[str, Any]) -> dict[str, str]:
        """The container's environment, as the kubelet resolves it."""
        namespace = pod["metadata"]["namespace"]
        env = {}
        for entry in container.get("env") or []:
            if "value" in entry:
                env[entry["name"]] = entry["value"]
                continue
            ref = (entry.get("valueFrom") or {}).get("secretKeyRef")
            if ref is None:
                continue
            secret = self.store.get("secrets", namespace, ref["name"])
            if secret is None:
                raise LookupError(f'secret "{ref["name"]}" not found')
            if ref["key"] not in (secret.get("data") or {}):
                raise LookupError(f"couldn't find key {ref['key']} in Secret "
                                  f"{namespace}/{ref['name']}")
            env[entry["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
        return env

    async def _run(self, pod: dict[str, Any], container: dict[str, Any], token: str) -> None:
        meta = pod["metadata"]
        args = [*container.get("command", []), *container.get("args", [])]
        port = (container.get("ports") or [{"containerPort": 8888}])[0]["containerPort"]
        base_url = _flag(args, "base_url") or "/"
        root = self._root(pod, container, _flag(args, "root_dir"))
        server = None
        for _ in range(len(self._addresses)):
            address = self._addresses[self._next_address % len(self._addresses)]
            self._next_address += 1
            if any(s.address == address for s in self.servers.values()):
                continue
            candidate = NotebookServer(address=address, port=port, base_url=base_url,
                                       token=token, root=root)
            try:
                await candidate.start()
            except OSError:
                continue  # someone else's address: try the next one
            server = candidate
            break
        if server is None:
            self._waiting(pod, "ContainerCreating", "no pod address is free")
            return
        current = self.store.get("pods", meta["namespace"], meta["name"])
        if current is not pod or meta.get("deletionTimestamp"):
            await server.stop()  # deleted while it started
            return
        self.servers[meta["uid"]] = server
        started = now()
        self._set_status(pod, {
            "phase": "Running", "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": server.address, "podIPs": [{"ip": server.address}], "startTime": started,
            "conditions": [_condition(kind, "True") for kind in
                           ("PodScheduled", "Initialized", "ContainersReady", "Ready")],
            "containerStatuses": [{
                "name": container["name"], "image": container["image"], "imageID": "",
                "ready": True, "started": True, "restartCount": 0,
                "containerID": f"standin://{meta['uid']}",
                "state": {"running": {"startedAt": started}},
            }],
        })

    def _root(self, pod: dict[str, Any], container: dict[str, Any],
              root_dir: str | None) -> Path | None:
        """The folder standing for the container's ``root_dir`` (default: its working dir,
        else its first volume's mount): inside the mounted claim's folder."""
        volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
        mounts = [m for m in container.get("volumeMounts") or []
                  if "persistentVolumeClaim" in volumes.get(m["name"], {})]
        if not mounts:
            return None
        wanted = root_dir or container.get("workingDir") or mounts[0]["mountPath"]
        for mount in sorted(mounts, key=lambda m: -len(m["mountPath"])):
            base = mount["mountPath"].rstrip("/")
            if wanted == base or wanted.startswith(base + "/"):
                claim_name = volumes[mount["name"]]["persistentVolumeClaim"]["claimName"]
                claim = self.store.get("persistentvolumeclaims", pod["metadata"]["namespace"],
                                       claim_name)
                if claim is None:
                    return None
                return self.volume_dir(claim) / wanted[len(base):].lstrip("/")
        return None

    async def kill(self, namespace: str, name: str) -> dict[str, Any]:
        """The container dies (an OOM kill): its server stops, the pod is Failed."""
        pod = self.store.require("pods", namespace, name)
        server = self.servers.pop(pod["metadata"]["uid"], None)
        if server is not None:
            await server.stop()
        return self._set_status(pod, _ended(pod, 137, "OOMKilled"))

    def _waiting(self, pod: dict[str, Any], reason: str, message: str) -> None:
        container = pod["spec"]["containers"][0]
        waiting = {"reason": reason, **({"message": message} if message else {})}
        self._set_status(pod, {
            "conditions": [_condition("PodScheduled", "True"),
                           _condition("Ready", "False", "ContainersNotReady")],
            "containerStatuses": [{
                "name": container["name"], "image": container["image"], "imageID": "",
                "ready": False, "started": False, "restartCount": 0,
                "state": {"waiting": waiting},
            }],
        })

    def _current(self, pod: dict[str, Any]) -> bool:
        meta = pod["metadata"]
        return self.store.get("pods", meta["namespace"], meta["name"]) is pod

    def _set_status(self, pod: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
        """Change the pod's status, unless only timestamps would change (a kubelet
        reporting the same state again writes nothing)."""
        if not self._current(pod):
            return pod
        if _stable({**pod["status"], **changes}) == _stable(pod["status"]):
            return pod
        meta = pod["metadata"]
        return self.store.update("pods", meta["namespace"], meta["name"],
                                 lambda o: o["status"].update(changes))


def _stable(value: Any) -> Any:
    """``value`` without its transition times."""
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k != "lastTransitionTime"}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


def _claims(pod: dict[str, Any]) -> list[str]:
    return [v["persistentVolumeClaim"]["claimName"] for v in pod["spec"].get("volumes") or []
            if "persistentVolumeClaim" in v]


def _flag(args: list[str], name: str) -> str | None:
    """The value of ``--ServerApp.{name}=…`` (or ``--NotebookApp.``) in ``args``."""
    for arg in args:
        for prefix in (f"--ServerApp.{name}=", f"--NotebookApp.{name}="):
            if arg.startswith(prefix):
                return arg[len(prefix):]
    return None


def _condition(kind: str, status: str, reason: str | None = None,
               message: str | None = None) -> dict[str, Any]:
    condition = {"type": kind, "status": status, "lastTransitionTime": now()}
    if reason:
        condition["reason"] = reason
    if message:
        condition["message"] = message
    return condition


def _ended(pod: dict[str, Any], code: int, reason: str) -> dict[str, Any]:
    container = pod["spec"]["containers"][0]
    phase = "Failed" if code else "Succeeded"
    if pod["status"].get("phase") in ("Failed", "Succeeded"):
        phase = pod["status"]["phase"]
    return {
        "phase": phase,
        "conditions": [_condition("Ready", "False", "PodCompleted")],
        "containerStatuses": [{
            "name": container["name"], "image": container["image"], "imageID": "",
            "ready": False, "started": False, "restartCount": 0,
            "state": {"terminated": {"exitCode": code, "reason": reason,
                                     "finishedAt": now()}},
        }],
    }
