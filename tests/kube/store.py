"""The stand-in's object store: what etcd and the API server's registry do for it.

Objects are plain dicts keyed by (resource, namespace, name). Every write takes the
next value of one global ``resourceVersion`` counter and is published as a watch
event; a bounded history of events lets a watch resume from a recent version, and a
watch from a version older than the history gets 410 Gone, as from a real server.
Deletion honours finalizers: an object with any is only marked (``deletionTimestamp``)
until the controllers remove the last one.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import re
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

KINDS = {
    "pods": "Pod",
    "persistentvolumeclaims": "PersistentVolumeClaim",
    "services": "Service",
    "secrets": "Secret",
}
"""The namespaced core/v1 resources the stand-in serves, by their plural."""

PVC_PROTECTION = "kubernetes.io/pvc-protection"
FOREGROUND = "foregroundDeletion"

_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")
_LABEL_NAME = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)")


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiProblem(Exception):
    """An answer other than success, with the Status body a real server sends."""

    def __init__(self, code: int, reason: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code,
        }
        if self.details:
            body["details"] = self.details
        return body


def not_found(plural: str, name: str) -> ApiProblem:
    return ApiProblem(404, "NotFound", f'{plural} "{name}" not found', name=name, kind=plural)


def gone(since: int, oldest: int) -> ApiProblem:
    return ApiProblem(410, "Expired", f"too old resource version: {since} ({oldest})")


# --- label selectors --------------------------------------------------------------------


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!"
    values: frozenset[str] = frozenset()

    def matches(self, labels: dict[str, str]) -> bool:
        value = labels.get(self.key)
        if self.op == "=":
            return value in self.values
        if self.op == "!=":
            return value not in self.values
        if self.op == "in":
            return value is not None and value in self.values
        if self.op == "notin":
            return value is None or value not in self.values
        if self.op == "exists":
            return value is not None
        return value is None  # "!"


_SET = re.compile(r"^\s*([^\s!=(),]+)\s+(in|notin)\s+\(([^()]*)\)\s*$")
_EQUALITY = re.compile(r"^\s*([^\s!=(),]+)\s*(==|=|!=)\s*([^\s!=(),]*)\s*$")
_EXISTS = re.compile(r"^\s*(!?)\s*([^\s!=(),]+)\s*$")


def parse_selector(text: str | None) -> list[Requirement]:
    """A label selector as the API accepts it: ``a=b``, ``a==b``, ``a!=b``,
    ``a in (x,y)``, ``a notin (x)``, ``a``, ``!a``, joined by commas."""
    if not text:
        return []
    terms, depth, start = [], 0, 0
    for index, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            terms.append(text[start:index])
            start = index + 1
    terms.append(text[start:])
    requirements = []
    for term in terms:
        if match := _SET.match(term):
            values = frozenset(v.strip() for v in match.group(3).split(",") if v.strip())
            requirements.append(Requirement(match.group(1), match.group(2), values))
        elif match := _EQUALITY.match(term):
            op = "!=" if match.group(2) == "!=" else "="
            requirements.append(Requirement(match.group(1), op, frozenset({match.group(3)})))
        elif match := _EXISTS.match(term):
            requirements.append(Requirement(match.group(2), "!" if match.group(1) else "exists"))
        else:
            raise ApiProblem(400, "BadRequest", f"unable to parse requirement: {term!r}")
    return requirements


def matches(obj: dict[str, Any], selector: list[Requirement]) -> bool:
    labels = obj["metadata"].get("labels") or {}
    return all(requirement.matches(labels) for requirement in selector)


# --- events and watches -----------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    version: int
    type: str  # ADDED, MODIFIED, DELETED
    plural: str
    namespace: str
    obj: dict[str, Any]

    def wire(self) -> dict[str, Any]:
        return {"type": self.type, "object": self.obj}


@dataclass(eq=False)
class Watch:
    plural: str
    namespace: str
    selector: list[Requirement]
    queue: asyncio.Queue[Event | None] = field(default_factory=asyncio.Queue)

    def wants(self, event: Event) -> bool:
        return (
            event.plural == self.plural
            and event.namespace == self.namespace
            and matches(event.obj, self.selector)
        )


# --- the store --------------------------------------------------------------------------


class Store:
    def __init__(self, namespaces: Iterable[str], history: int = 1000) -> None:
        self.version = 1000
        self.namespaces = {
            name: {"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": name, "uid": str(uuid.uuid4()),
                                "resourceVersion": "1", "creationTimestamp": now()},
                   "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}
            for name in namespaces
        }
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.history: deque[Event] = deque(maxlen=history)
        self.evicted = 0
        """The version of the newest event that left the history."""
        self.watches: set[Watch] = set()
        self.changed = asyncio.Event()
        """Set at every write (the controllers wait on it), cleared by them."""
        self._cluster_ips = 0

    # --- reading ------------------------------------------------------------------------

    def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((plural, namespace, name))

    def require(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        found = self.get(plural, namespace, name)
        if found is None:
            raise not_found(plural, name)
        return found

    def all(self, plural: str | None = None) -> list[tuple[str, dict[str, Any]]]:
        return [(key[0], obj) for key, obj in self.objects.items()
                if plural is None or key[0] == plural]

    def by_uid(self, uid: str) -> dict[str, Any] | None:
        return next((o for o in self.objects.values() if o["metadata"]["uid"] == uid), None)

    def list(
        self, plural: str, namespace: str, selector: list[Requirement]
    ) -> dict[str, Any]:
        self.check_namespace(namespace)
        items = [obj for (kind, ns, _), obj in sorted(self.objects.items())
                 if kind == plural and ns == namespace and matches(obj, selector)]
        return {"apiVersion": "v1", "kind": f"{KINDS[plural]}List",
                "metadata": {"resourceVersion": str(self.version)}, "items": items}

    def check_namespace(self, namespace: str) -> None:
        if namespace not in self.namespaces:
            raise not_found("namespaces", namespace)

    # --- writing ------------------------------------------------------------------------

    def _publish(self, kind: str, plural: str, obj: dict[str, Any]) -> None:
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)
        event = Event(self.version, kind, plural, obj["metadata"]["namespace"], _copy(obj))
        if len(self.history) == self.history.maxlen:
            self.evicted = self.history[0].version
        self.history.append(event)
        for watch in list(self.watches):
            if watch.wants(event):
                watch.queue.put_nowait(event)
        self.changed.set()

    def create(self, plural: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        self.check_namespace(namespace)
        obj = _copy(body)
        meta = obj.setdefault("metadata", {})
        kind = KINDS[plural]
        if obj.get("kind", kind) != kind or obj.get("apiVersion", "v1") != "v1":
            raise ApiProblem(400, "BadRequest",
                             f"the body is a {obj.get('kind')}, not a {kind}")
        if meta.get("namespace", namespace) != namespace:
            raise ApiProblem(400, "BadRequest", "the namespace of the provided object does "
                             "not match the namespace sent on the request")
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        _validate(plural, obj)
        name = meta["name"]
        if (plural, namespace, name) in self.objects:
            raise ApiProblem(409, "AlreadyExists", f'{plural} "{name}" already exists',
                             name=name, kind=plural)
        obj["apiVersion"], obj["kind"] = "v1", kind
        meta.update(namespace=namespace, uid=str(uuid.uuid4()), creationTimestamp=now())
        for key in ("deletionTimestamp", "deletionGracePeriodSeconds", "resourceVersion"):
            meta.pop(key, None)
        self._defaults(plural, obj)
        self.objects[(plural, namespace, name)] = obj
        self._publish("ADDED", plural, obj)
        return obj

    def _defaults(self, plural: str, obj: dict[str, Any]) -> None:
        spec = obj.setdefault("spec", {}) if plural != "secrets" else {}
        if plural == "pods":
            obj["status"] = {"phase": "Pending", "qosClass": _qos(spec)}
            spec.setdefault("restartPolicy", "Always")
        elif plural == "persistentvolumeclaims":
            obj["status"] = {"phase": "Pending"}
            obj["metadata"].setdefault("finalizers", []).append(PVC_PROTECTION)
        elif plural == "services":
            spec.setdefault("type", "ClusterIP")
            self._cluster_ips += 1
            address = f"10.96.{self._cluster_ips // 250}.{self._cluster_ips % 250 + 2}"
            spec["clusterIP"], spec["clusterIPs"] = address, [address]
            for port in spec.get("ports", []):
                port.setdefault("protocol", "TCP")
                port.setdefault("targetPort", port.get("port"))
        elif plural == "secrets":
            data = obj.setdefault("data", {})
            for key, value in (obj.pop("stringData", None) or {}).items():
                data[key] = base64.b64encode(value.encode()).decode()
            obj.setdefault("type", "Opaque")

    def update(
        self, plural: str, namespace: str, name: str, change: Callable[[dict[str, Any]], None]
    ) -> dict[str, Any]:
        """Apply ``change`` to the stored object and publish it (MODIFIED)."""
        obj = self.require(plural, namespace, name)
        before = _copy(obj)
        change(obj)
        if obj != before:
            self._publish("MODIFIED", plural, obj)
        return obj

    def delete(
        self, plural: str, namespace: str, name: str, *, policy: str | None = None,
        grace: int | None = None,
    ) -> dict[str, Any]:
        """What DELETE does: mark the object, or remove it at once when nothing holds it.
        Pods are always marked: the kubelet removes them once their container ended."""
        obj = self.require(plural, namespace, name)
        meta = obj["metadata"]
        if meta.get("deletionTimestamp"):
            return obj
        if policy == "Orphan":
            self._orphan(meta["uid"])
        finalizers = list(meta.get("finalizers") or [])
        if policy == "Foreground":
            finalizers.append(FOREGROUND)
        if plural == "pods" or finalizers:
            def mark(o: dict[str, Any]) -> None:
                o["metadata"]["deletionTimestamp"] = now()
                o["metadata"]["finalizers"] = finalizers
                if plural == "pods":
                    given = o["spec"].get("terminationGracePeriodSeconds", 30)
                    o["metadata"]["deletionGracePeriodSeconds"] = given if grace is None else grace
                if not finalizers:
                    del o["metadata"]["finalizers"]
            return self.update(plural, namespace, name, mark)
        return self.remove(plural, namespace, name)

    def remove(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        """Take the object out of the store (DELETED)."""
        obj = self.objects.pop((plural, namespace, name))
        self._publish("DELETED", plural, obj)
        return obj

    def _orphan(self, uid: str) -> None:
        for (plural, namespace, name), obj in list(self.objects.items()):
            refs = obj["metadata"].get("ownerReferences") or []
            if any(ref.get("uid") == uid for ref in refs):
                def drop(o: dict[str, Any], refs: list[dict[str, Any]] = refs) -> None:
                    kept = [r for r in refs if r.get("uid") != uid]
                    if kept:
                        o["metadata"]["ownerReferences"] = kept
                    else:
                        o["metadata"].pop("ownerReferences", None)
                self.update(plural, namespace, name, drop)

    # --- watching -----------------------------------------------------------------------

    def watch(
        self, plural: str, namespace: str, selector: list[Requirement], since: int | None
    ) -> Watch:
        """A watch with its first events queued: those after ``since`` from the history,
        or, without a version, every current object as ADDED."""
        self.check_namespace(namespace)
        if since is not None and since < self.evicted:
            raise gone(since, self.evicted + 1)
        watch = Watch(plural, namespace, selector)
        if since is None:
            for (kind, ns, _), obj in sorted(self.objects.items()):
                event = Event(self.version, "ADDED", kind, ns, _copy(obj))
                if watch.wants(event):
                    watch.queue.put_nowait(event)
        else:
            for event in self.history:
                if event.version > since and watch.wants(event):
                    watch.queue.put_nowait(event)
        self.watches.add(watch)
        return watch

    def unwatch(self, watch: Watch) -> None:
        self.watches.discard(watch)

    def close_watches(self) -> None:
        for watch in list(self.watches):
            watch.queue.put_nowait(None)


def _copy(obj: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(obj)


def _qos(spec: dict[str, Any]) -> str:
    containers = spec.get("containers") or []
    limits = [c.get("resources", {}).get("limits") or {} for c in containers]
    requests = [c.get("resources", {}).get("requests") or {} for c in containers]
    if not any(limits) and not any(requests):
        return "BestEffort"
    if all(lim.get("cpu") and lim.get("memory") and (req or lim) == {**req, **lim}
           for lim, req in zip(limits, requests, strict=True)):
        return "Guaranteed"
    return "Burstable"


def _invalid(plural: str, name: str, field_path: str, detail: str) -> ApiProblem:
    return ApiProblem(422, "Invalid", f'{KINDS[plural]} "{name}" is invalid: {field_path}: '
                      f"{detail}", name=name, kind=KINDS[plural])


def _validate(plural: str, obj: dict[str, Any]) -> None:
    """The checks of the real API server that a wrong manifest would meet first."""
    meta = obj["metadata"]
    name = meta.get("name") or ""
    if not name:
        raise _invalid(plural, name, "metadata.name", "Required value: name or generateName "
                       "is required")
    if plural == "services":
        if len(name) > 63 or not _DNS1035.fullmatch(name):
            raise _invalid(plural, name, "metadata.name", f'Invalid value: "{name}": a DNS-1035 '
                           "label must consist of lower case alphanumeric characters or '-', "
                           "start with an alphabetic character, and end with an alphanumeric "
                           "character")
    elif len(name) > 253 or not _SUBDOMAIN.fullmatch(name):
        raise _invalid(plural, name, "metadata.name", f'Invalid value: "{name}": a lowercase '
                       "RFC 1123 subdomain must consist of lower case alphanumeric characters, "
                       "'-' or '.', and must start and end with an alphanumeric character")
    for key, value in (meta.get("labels") or {}).items():
        base = key.rsplit("/", 1)[-1]
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.fullmatch(value):
            raise _invalid(plural, name, "metadata.labels", f'Invalid value: "{value}"')
        if len(base) > 63 or not _LABEL_NAME.fullmatch(base):
            raise _invalid(plural, name, "metadata.labels", f'Invalid value: "{key}"')
    for ref in meta.get("ownerReferences") or []:
        for required in ("apiVersion", "kind", "name", "uid"):
            if not ref.get(required):
                raise _invalid(plural, name, f"metadata.ownerReferences.{required}",
                               "Required value")
    if plural == "pods":
        containers = (obj.get("spec") or {}).get("containers") or []
        if not containers:
            raise _invalid(plural, name, "spec.containers", "Required value")
        for index, container in enumerate(containers):
            for required in ("name", "image"):
                if not container.get(required):
                    raise _invalid(plural, name, f"spec.containers[{index}].{required}",
                                   "Required value")
    if plural == "services":
        for index, port in enumerate((obj.get("spec") or {}).get("ports") or []):
            if not 1 <= int(port.get("port") or 0) <= 65535:
                raise _invalid(plural, name, f"spec.ports[{index}].port",
                               f"Invalid value: {port.get('port')}")
