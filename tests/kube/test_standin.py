"""The stand-in's own semantics, through lightkube as the backend uses it: if these do not
hold, the Kubernetes backend's tests against it prove nothing."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from lightkube import ApiError, AsyncClient, KubeConfig
from lightkube.config.models import Cluster, User
from lightkube.models.authorization_v1 import ResourceAttributes, SelfSubjectAccessReviewSpec
from lightkube.resources.authorization_v1 import SelfSubjectAccessReview
from lightkube.resources.core_v1 import Namespace, PersistentVolumeClaim, Pod, Secret, Service
from lightkube.types import CascadeType

from tests.kube.standin import StandIn
from tests.kube.store import parse_selector

NS = "demanager"


@pytest.fixture
async def standin(tmp_path: Path) -> AsyncIterator[StandIn]:
    server = StandIn(tmp_path / "state", deny=("delete:secrets",), history=20,
                     start_seconds=0.2)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def kube(standin: StandIn) -> AsyncIterator[AsyncClient]:
    config = KubeConfig.from_one(cluster=Cluster(server=standin.url), user=User())
    client = AsyncClient(config, namespace=NS)
    try:
        yield client
    finally:
        await client.close()


def _claim(name: str, **labels: str) -> PersistentVolumeClaim:
    return PersistentVolumeClaim.from_dict({
        "metadata": {"name": name, "labels": labels},
        "spec": {"accessModes": ["ReadWriteOnce"],
                 "resources": {"requests": {"storage": "1Gi"}}},
    })


def _pod(name: str, *, image: str = "demanager/notebook:latest", claim: str | None = None,
         token: dict[str, Any] | None = None, owner: Any = None, **labels: str) -> Pod:
    container: dict[str, Any] = {
        "name": "notebook", "image": image,
        "command": ["jupyter", "lab", f"--ServerApp.base_url=/nb/{name}/"],
        "ports": [{"containerPort": 8888}],
        "env": [{"name": "JUPYTER_TOKEN", **(token or {"value": "secret-token"})}],
    }
    spec: dict[str, Any] = {"containers": [container], "restartPolicy": "Never"}
    if claim:
        spec["volumes"] = [{"name": "work", "persistentVolumeClaim": {"claimName": claim}}]
        container["volumeMounts"] = [{"name": "work", "mountPath": "/home/jovyan/work"}]
        container["workingDir"] = "/home/jovyan/work"
    meta: dict[str, Any] = {"name": name, "labels": labels}
    if owner is not None:
        meta["ownerReferences"] = [_ref(owner)]
    return Pod.from_dict({"metadata": meta, "spec": spec})


def _ref(owner: Any) -> dict[str, str]:
    return {"apiVersion": "v1", "kind": owner.kind, "name": owner.metadata.name,
            "uid": owner.metadata.uid}


async def _until(predicate: Callable[[], Any], what: str, seconds: float = 10.0) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting until {what}")


async def _absent(kube: AsyncClient, kind: Any, name: str) -> bool:
    try:
        await kube.get(kind, name, namespace=NS)
    except ApiError as exc:
        return exc.status.code == 404
    return False


async def _running(kube: AsyncClient, name: str) -> Pod:
    async def running() -> Pod | None:
        pod = await kube.get(Pod, name, namespace=NS)
        return pod if pod.status.phase == "Running" else None

    pod: Pod = await _until(running, f"{name} runs")
    return pod


# --- the API ------------------------------------------------------------------------------


async def test_version_and_namespaces(standin: StandIn, kube: AsyncClient) -> None:
    async with httpx.AsyncClient(base_url=standin.url) as http:
        assert (await http.get("/version")).json()["major"] == "1"
        assert (await http.get("/api")).json()["versions"] == ["v1"]
        kinds = {r["kind"] for r in (await http.get("/api/v1")).json()["resources"]}
        assert {"Pod", "PersistentVolumeClaim", "Service", "Secret", "Namespace"} <= kinds
        unknown = await http.get("/api/v1/nothing")
        assert unknown.status_code == 404 and unknown.json()["kind"] == "Status"
    assert (await kube.get(Namespace, NS)).metadata.name == NS
    with pytest.raises(ApiError) as missing:
        await kube.get(Namespace, "elsewhere")
    assert missing.value.status.code == 404
    with pytest.raises(ApiError) as nowhere:
        await kube.create(_claim("v"), namespace="elsewhere")
    assert nowhere.value.status.code == 404


async def test_create_twice_is_409_with_a_status(kube: AsyncClient) -> None:
    first = await kube.create(_claim("twice"))
    assert first.metadata.uid and first.metadata.creationTimestamp is not None
    with pytest.raises(ApiError) as again:
        await kube.create(_claim("twice"))
    status = again.value.status
    assert (status.code, status.reason) == (409, "AlreadyExists")
    assert status.message == 'persistentvolumeclaims "twice" already exists'


async def test_invalid_objects_are_422(kube: AsyncClient) -> None:
    with pytest.raises(ApiError) as bad_name:
        await kube.create(_claim("Not_A_Name"))
    assert (bad_name.value.status.code, bad_name.value.status.reason) == (422, "Invalid")
    with pytest.raises(ApiError) as bad_service:
        await kube.create(Service.from_dict({"metadata": {"name": "9-starts-with-a-digit"},
                                             "spec": {"ports": [{"port": 80}]}}))
    assert bad_service.value.status.code == 422
    async with httpx.AsyncClient(base_url=kube.config.cluster.server) as http:
        no_containers = await http.post(f"/api/v1/namespaces/{NS}/pods",
                                        json={"metadata": {"name": "empty"}, "spec": {}})
    assert no_containers.status_code == 422
    assert "spec.containers" in no_containers.json()["message"]


async def test_one_resource_version_counter_orders_every_write(kube: AsyncClient) -> None:
    versions = []
    for name in ("a", "b", "c"):
        created = await kube.create(_claim(name))
        versions.append(int(created.metadata.resourceVersion))
    assert versions == sorted(versions) and len(set(versions)) == 3
    listing = kube.list(PersistentVolumeClaim, namespace=NS)
    names = [claim.metadata.name async for claim in listing]
    assert names == ["a", "b", "c"]
    assert int(listing.resourceVersion) >= versions[-1]


async def test_label_selectors(kube: AsyncClient) -> None:
    await kube.create(_claim("x", app="nb", tier="a"))
    await kube.create(_claim("y", app="nb", tier="b"))
    await kube.create(_claim("z", app="other"))

    async def names(**labels: Any) -> list[str]:
        return [c.metadata.name async for c in kube.list(PersistentVolumeClaim, labels=labels)]

    assert await names(app="nb") == ["x", "y"]
    assert await names(app="nb", tier="b") == ["y"]
    assert await names(tier=("a", "b")) == ["x", "y"]  # set-based: tier in (a,b)
    requirement = parse_selector("app notin (nb),!tier")
    assert [r.op for r in requirement] == ["notin", "!"]
    async with httpx.AsyncClient(base_url=f"{kube.config.cluster.server}") as http:
        found = await http.get(f"/api/v1/namespaces/{NS}/persistentvolumeclaims",
                               params={"labelSelector": "app notin (nb),!tier"})
        assert [i["metadata"]["name"] for i in found.json()["items"]] == ["z"]
        exists = await http.get(f"/api/v1/namespaces/{NS}/persistentvolumeclaims",
                                params={"labelSelector": "tier,app!=other"})
        assert [i["metadata"]["name"] for i in exists.json()["items"]] == ["x", "y"]


async def test_watch_from_a_version_then_410_when_it_is_too_old(kube: AsyncClient) -> None:
    listing = kube.list(Secret, namespace=NS)
    assert [s async for s in listing] == []
    start = listing.resourceVersion
    await kube.create(Secret.from_dict({"metadata": {"name": "s1", "labels": {"w": "1"}},
                                        "stringData": {"k": "v"}}))
    await kube.create(Secret.from_dict({"metadata": {"name": "s2"}, "data": {}}))
    seen = []
    async for kind, secret in kube.watch(Secret, namespace=NS, labels={"w": "1"},
                                         resource_version=start):
        seen.append((kind, secret.metadata.name))
        assert base64.b64decode(secret.data["k"]) == b"v"  # stringData became data
        break
    assert seen == [("ADDED", "s1")]
    # The history holds 20 events: 25 writes later, the first version is gone.
    for index in range(25):
        await kube.create(_claim(f"churn-{index}"))
    with pytest.raises(ApiError) as expired:
        async for _ in kube.watch(Secret, namespace=NS, resource_version=start):
            break
    assert (expired.value.status.code, expired.value.status.reason) == (410, "Expired")


async def test_a_watch_streams_modifications_and_deletions(
    standin: StandIn, kube: AsyncClient
) -> None:
    listing = kube.list(Pod, namespace=NS)
    _ = [p async for p in listing]
    events: list[tuple[str, str | None]] = []

    async def follow() -> None:
        async for kind, pod in kube.watch(Pod, namespace=NS,
                                          resource_version=listing.resourceVersion):
            events.append((kind, pod.status.phase))
            if kind == "DELETED":
                return

    follower = asyncio.create_task(follow())
    await kube.create(_pod("watched"))
    await _running(kube, "watched")
    await kube.delete(Pod, "watched", namespace=NS)
    await asyncio.wait_for(follower, 10)
    assert events[0] == ("ADDED", "Pending")
    assert ("MODIFIED", "Running") in events
    assert events[-1][0] == "DELETED"


async def test_a_watch_ends_after_its_timeout(standin: StandIn) -> None:
    async with httpx.AsyncClient(base_url=standin.url) as http:
        began = time.monotonic()
        response = await http.get(f"/api/v1/namespaces/{NS}/pods",
                                  params={"watch": "true", "timeoutSeconds": "1"})
        assert response.status_code == 200 and response.text == ""
        assert time.monotonic() - began >= 0.9


# --- garbage collection -------------------------------------------------------------------


async def test_deleting_an_owner_deletes_its_dependents_in_cascade(kube: AsyncClient) -> None:
    claim = await kube.create(_claim("owner"))
    pod = await kube.create(_pod("child", claim="owner", owner=claim))
    service = await kube.create(Service.from_dict({
        "metadata": {"name": "grandchild", "ownerReferences": [_ref(pod)]},
        "spec": {"ports": [{"port": 8888}], "selector": {"app": "x"}},
    }))
    assert service.spec.clusterIP
    await _running(kube, "child")
    # In the background, a claim its pod uses waits for the pod (pvc-protection), and
    # the pod for its owner to go: deleting the owner in the foreground takes both.
    await kube.delete(PersistentVolumeClaim, "owner", namespace=NS,
                      cascade=CascadeType.FOREGROUND)
    await _until(lambda: _absent(kube, Service, "grandchild"), "the service is collected")
    await _until(lambda: _absent(kube, Pod, "child"), "the pod is collected")
    await _until(lambda: _absent(kube, PersistentVolumeClaim, "owner"), "the claim goes")


async def test_background_deletion_collects_dependents_once_the_owner_is_gone(
    kube: AsyncClient,
) -> None:
    pod = await kube.create(_pod("parent-pod"))
    await kube.create(Service.from_dict({
        "metadata": {"name": "owned", "ownerReferences": [_ref(pod)]},
        "spec": {"ports": [{"port": 8888}]},
    }))
    await _running(kube, "parent-pod")
    await kube.delete(Pod, "parent-pod", namespace=NS, cascade=CascadeType.BACKGROUND)
    await _until(lambda: _absent(kube, Pod, "parent-pod"), "the pod goes")
    await _until(lambda: _absent(kube, Service, "owned"), "then its service")


async def test_orphan_and_foreground_deletion(kube: AsyncClient) -> None:
    owner = await kube.create(_claim("parent"))
    await kube.create(Secret.from_dict({"metadata": {"name": "orphan",
                                                     "ownerReferences": [_ref(owner)]}}))
    await kube.delete(PersistentVolumeClaim, "parent", namespace=NS, cascade=CascadeType.ORPHAN)
    await _until(lambda: _absent(kube, PersistentVolumeClaim, "parent"), "the owner goes")
    kept = await kube.get(Secret, "orphan", namespace=NS)
    assert not kept.metadata.ownerReferences

    owner = await kube.create(_claim("first"))
    await kube.create(Secret.from_dict({"metadata": {"name": "dependent",
                                                     "ownerReferences": [_ref(owner)]}}))
    await kube.delete(PersistentVolumeClaim, "first", namespace=NS,
                      cascade=CascadeType.FOREGROUND)
    await _until(lambda: _absent(kube, Secret, "dependent"), "the dependent goes first")
    await _until(lambda: _absent(kube, PersistentVolumeClaim, "first"), "then the owner")


async def test_a_claim_in_use_waits_for_its_pod(kube: AsyncClient) -> None:
    await kube.create(_claim("used"))
    await kube.create(_pod("user", claim="used"))
    await _running(kube, "user")
    await kube.delete(PersistentVolumeClaim, "used", namespace=NS)
    await asyncio.sleep(0.5)
    held = await kube.get(PersistentVolumeClaim, "used", namespace=NS)
    assert held.metadata.deletionTimestamp is not None
    assert "kubernetes.io/pvc-protection" in held.metadata.finalizers
    await kube.delete(Pod, "user", namespace=NS)
    await _until(lambda: _absent(kube, PersistentVolumeClaim, "used"), "the claim goes")


# --- the kubelet --------------------------------------------------------------------------


async def test_a_pod_runs_a_notebook_on_its_own_address_with_its_volume(
    standin: StandIn, kube: AsyncClient
) -> None:
    await kube.create(_claim("vol"))
    await kube.create(_pod("nb", claim="vol"))
    pod = await _running(kube, "nb")
    assert pod.status.podIP.startswith("127.0.1.")
    assert pod.status.containerStatuses[0].state.running is not None
    base = f"http://{pod.status.podIP}:8888/nb/nb/"
    auth = {"Authorization": "token secret-token"}
    async with httpx.AsyncClient(base_url=base, trust_env=False) as http:
        assert (await http.get("api/status")).status_code == 403
        status = await http.get("api/status", headers=auth)
        assert status.status_code == 200 and "started" in status.json()
        put = await http.put("api/contents/kept.txt", headers=auth,
                             json={"type": "file", "format": "text", "content": "hello"})
        assert put.status_code == 201
    # Only the pod's own address listens.
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient(trust_env=False) as http:
            await http.get("http://127.0.0.1:8888/nb/nb/api/status", headers=auth)

    await kube.delete(Pod, "nb", namespace=NS)
    await _until(lambda: _absent(kube, Pod, "nb"), "the pod goes")
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient(trust_env=False) as http:
            await http.get(f"{base}api/status", headers=auth)

    await kube.create(_pod("again", claim="vol"))
    again = await _running(kube, "again")
    assert again.status.podIP != pod.status.podIP
    async with httpx.AsyncClient(base_url=f"http://{again.status.podIP}:8888/nb/again/",
                                 trust_env=False, headers=auth) as http:
        read = await http.get("api/contents/kept.txt", params={"content": "1"})
        assert read.json()["content"] == "hello", "the files outlive the pod"
    claim = await kube.get(PersistentVolumeClaim, "vol", namespace=NS)
    folder = standin.controllers.volume_dir(claim.to_dict())
    assert (folder / "kept.txt").exists()
    await kube.delete(Pod, "again", namespace=NS)
    await kube.delete(PersistentVolumeClaim, "vol", namespace=NS)
    await _until(lambda: not folder.exists(), "the folder goes with the claim")


async def test_a_missing_image_keeps_the_pod_pending(kube: AsyncClient) -> None:
    await kube.create(_pod("broken", image="demanager/no-such-image:missing"))

    async def reason() -> str | None:
        pod = await kube.get(Pod, "broken", namespace=NS)
        statuses = pod.status.containerStatuses or []
        waiting = statuses[0].state.waiting if statuses else None
        return waiting.reason if waiting else None

    await _until(lambda: _is(reason(), "ErrImagePull"), "ErrImagePull")
    await _until(lambda: _is(reason(), "ImagePullBackOff"), "then ImagePullBackOff")
    pod = await kube.get(Pod, "broken", namespace=NS)
    assert pod.status.phase == "Pending" and pod.status.podIP is None


async def _is(value: Any, expected: Any) -> bool:
    return (await value) == expected


async def test_a_token_from_a_missing_secret_waits_for_it(kube: AsyncClient) -> None:
    ref = {"valueFrom": {"secretKeyRef": {"name": "later", "key": "token"}}}
    await kube.create(_pod("waits", token=ref))

    async def reason() -> str | None:
        pod = await kube.get(Pod, "waits", namespace=NS)
        statuses = pod.status.containerStatuses or []
        return statuses[0].state.waiting.reason if statuses and statuses[0].state.waiting \
            else None

    await _until(lambda: _is(reason(), "CreateContainerConfigError"), "the config error")
    await kube.create(Secret.from_dict({"metadata": {"name": "later"},
                                        "stringData": {"token": "from-secret"}}))
    pod = await _running(kube, "waits")
    async with httpx.AsyncClient(trust_env=False) as http:
        answer = await http.get(f"http://{pod.status.podIP}:8888/nb/waits/api/status",
                                headers={"Authorization": "token from-secret"})
        assert answer.status_code == 200


async def test_an_unschedulable_pod_stays_pending(kube: AsyncClient) -> None:
    pod = _pod("picky").to_dict()
    pod["spec"]["nodeSelector"] = {"demanager.io/pool": "gpu-pool"}
    await kube.create(Pod.from_dict(pod))

    async def unschedulable() -> bool:
        found = await kube.get(Pod, "picky", namespace=NS)
        return any(c.reason == "Unschedulable" for c in found.status.conditions or [])

    await _until(unschedulable, "the scheduler gives up on it")


async def test_kill_fails_the_pod(standin: StandIn, kube: AsyncClient) -> None:
    await kube.create(_pod("victim"))
    await _running(kube, "victim")
    async with httpx.AsyncClient(base_url=standin.url) as http:
        killed = await http.post(f"/standin/pods/{NS}/victim/kill")
        assert killed.status_code == 200
    pod = await kube.get(Pod, "victim", namespace=NS)
    assert pod.status.phase == "Failed"
    assert pod.status.containerStatuses[0].state.terminated.exitCode == 137


async def test_access_reviews_follow_the_deny_list(kube: AsyncClient) -> None:
    async def allowed(verb: str, resource: str) -> bool:
        review = SelfSubjectAccessReview(spec=SelfSubjectAccessReviewSpec(
            resourceAttributes=ResourceAttributes(namespace=NS, verb=verb, resource=resource)))
        return bool((await kube.create(review)).status.allowed)

    assert await allowed("create", "pods")
    assert not await allowed("delete", "secrets")
