"""The Kubernetes backend against the API-server stand-in, in this process: what the
conformance suite cannot see from outside (the objects it makes and how they own one
another, the shared watch, errors, ``check``)."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from demanager.backends.base import BackendContext, LaunchSpec
from demanager.backends.kubernetes import manifests
from demanager.backends.kubernetes.backend import KubernetesBackend, KubernetesHandle
from demanager.backends.options import KubernetesOptions
from demanager.domain.catalog import Flavor, Profile
from demanager.domain.instance import Location, Storage
from demanager.domain.planning import Observation, Workload
from demanager.errors import PermanentBackendError, TransientBackendError
from demanager.objectstore.access import BucketLookup, ObjectAccess, ProjectKeys
from demanager.objectstore.options import S3Options
from tests.kube.standin import StandIn

NS = "demanager"


@pytest.fixture
async def standin(tmp_path: Path) -> AsyncIterator[StandIn]:
    server = StandIn(tmp_path / "state", namespaces=(NS,), deny=("delete:secrets",),
                     history=30, start_seconds=0.1)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def _backend(url: str, tmp_path: Path, **options: Any) -> KubernetesBackend:
    settings = KubernetesOptions(server=url, address="pod", **options)
    return KubernetesBackend(settings, BackendContext(data_dir=tmp_path))


@pytest.fixture
async def backend(standin: StandIn, tmp_path: Path) -> AsyncIterator[KubernetesBackend]:
    built = _backend(standin.url, tmp_path)
    try:
        yield built
    finally:
        await built.close()


def _spec(*, image: str = "notebook", tag: str = "latest", pool: str | None = None,
          storage: Storage | None = None, extend: tuple[Storage, ...] = (),
          **launch: Any) -> LaunchSpec:
    profile = Profile(id="p", name="p", description="", flavor_type="CPU",
                      namespace="demanager", image_name=image, image_tag=tag, category=None,
                      launch={"kubernetes": launch} if launch else {})
    return LaunchSpec(
        instance_id=f"DE-{uuid.uuid4()}", project_id="proj", profile=profile,
        flavor=Flavor(name="f", type="CPU", params={"CPU": 1, "memory": "1GiB"}),
        storage=storage or Storage("evs", Location(volume_size=5)), extend_storage=extend,
        now_ms=int(time.time() * 1000), pool_id=pool,
    )


async def _observe_until(
    backend: KubernetesBackend, instance_id: str, handle: KubernetesHandle | None,
    done: Any, seconds: float = 15.0,
) -> Observation[KubernetesHandle]:
    deadline = time.monotonic() + seconds
    while True:
        seen = await backend.observe(instance_id, handle)
        if done(seen) or time.monotonic() > deadline:
            assert done(seen), f"last observed: {seen}"
            return seen
        await asyncio.sleep(0.05)


def _objects(standin: StandIn, instance_id: str) -> dict[str, dict[str, Any]]:
    return {plural: obj for plural, obj in standin.store.all()
            if obj["metadata"]["labels"].get(manifests.INSTANCE) == instance_id}


def _ready(seen: Observation[KubernetesHandle]) -> bool:
    return seen.workload is Workload.READY


async def test_start_makes_the_objects_owned_in_a_chain_and_the_notebook_answers(
    standin: StandIn, backend: KubernetesBackend
) -> None:
    spec = _spec()
    handle = await backend.start(spec)
    objects = _objects(standin, spec.instance_id)
    assert set(objects) == {"persistentvolumeclaims", "secrets", "pods", "services"}
    claim, pod = objects["persistentvolumeclaims"], objects["pods"]
    owner = {plural: obj["metadata"].get("ownerReferences", [{}])[0].get("uid")
             for plural, obj in objects.items()}
    assert owner == {"persistentvolumeclaims": None, "secrets": claim["metadata"]["uid"],
                     "pods": claim["metadata"]["uid"], "services": pod["metadata"]["uid"]}
    for obj in objects.values():
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "demanager"
        assert obj["metadata"]["labels"]["demanager.io/deployment"] == "demanager"
    assert handle.uid == pod["metadata"]["uid"] and handle.pod == pod["metadata"]["name"]
    assert handle.token not in str(pod), "the token is in the secret, not the pod"

    seen = await _observe_until(backend, spec.instance_id, handle, _ready)
    assert seen.endpoint is not None and seen.endpoint.host.startswith("127.0.1.")
    assert seen.endpoint.base_path == f"/notebooks/{spec.instance_id}/"
    assert seen.launched_at == handle.launched_at
    async with httpx.AsyncClient(trust_env=False) as http:
        status = await http.get(
            f"http://{seen.endpoint.host}:{seen.endpoint.port}{seen.endpoint.base_path}api/status",
            headers=dict(seen.endpoint.headers))
        assert status.status_code == 200

    adopted = await backend.observe(spec.instance_id, None)
    assert adopted.workload is Workload.READY and adopted.handle is not None
    assert adopted.handle.model_dump() == handle.model_dump(), "rebuilt from pod and secret"


async def test_stop_keeps_the_claim_and_delete_removes_it(
    standin: StandIn, backend: KubernetesBackend
) -> None:
    spec = _spec()
    handle = await backend.start(spec)
    await _observe_until(backend, spec.instance_id, handle, _ready)
    await backend.stop(spec.instance_id, handle)
    assert set(_objects(standin, spec.instance_id)) == {"persistentvolumeclaims"}
    # Right after the stop, the cache agrees: no pod.
    assert (await backend.observe(spec.instance_id, handle)).workload is Workload.ABSENT
    assert (await backend.observe(spec.instance_id, None)).workload is Workload.ABSENT
    claim = _objects(standin, spec.instance_id)["persistentvolumeclaims"]
    folder = standin.controllers.volume_dir(claim)
    assert folder.is_dir()
    await backend.delete(spec.instance_id, None, spec.storage)
    await backend.delete(spec.instance_id, None, spec.storage)
    deadline = time.monotonic() + 10
    while _objects(standin, spec.instance_id) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert _objects(standin, spec.instance_id) == {}
    assert not folder.exists()


async def test_a_new_start_replaces_the_pod(standin: StandIn, backend: KubernetesBackend) -> None:
    spec = _spec()
    first = await backend.start(spec)
    await _observe_until(backend, spec.instance_id, first, _ready)
    second = await backend.start(spec)
    assert second.uid != first.uid and second.token != first.token
    assert (await backend.observe(spec.instance_id, first)).workload is Workload.ABSENT
    await _observe_until(backend, spec.instance_id, second, _ready)
    await backend.delete(spec.instance_id, second, spec.storage)


async def test_an_image_that_cannot_be_pulled_fails_the_start(backend: KubernetesBackend) -> None:
    spec = _spec(image="no-such-image", tag="missing")
    handle = await backend.start(spec)
    seen = await _observe_until(backend, spec.instance_id, handle,
                                lambda s: s.failure is not None)
    assert seen.workload is Workload.BOOTING
    assert seen.failure is not None and seen.failure.code == "ModelArts.6361"
    assert seen.failure.message.startswith(
        "image demanager/no-such-image:missing cannot be pulled: ")
    await backend.delete(spec.instance_id, handle, spec.storage)


async def test_a_killed_pod_is_absent(standin: StandIn, backend: KubernetesBackend) -> None:
    spec = _spec()
    handle = await backend.start(spec)
    await _observe_until(backend, spec.instance_id, handle, _ready)
    await standin.controllers.kill(NS, handle.pod)
    await _observe_until(backend, spec.instance_id, handle,
                         lambda s: s.workload is Workload.ABSENT)
    await backend.delete(spec.instance_id, handle, spec.storage)


async def test_a_pool_pins_the_pod_to_its_nodes(standin: StandIn,
                                                backend: KubernetesBackend) -> None:
    spec = _spec(pool="pool-1")
    handle = await backend.start(spec)
    pod = _objects(standin, spec.instance_id)["pods"]
    assert pod["spec"]["nodeSelector"] == {"demanager.io/pool": "pool-1"}
    await asyncio.sleep(0.5)
    seen = await backend.observe(spec.instance_id, handle)
    assert seen.workload is Workload.BOOTING and seen.failure is None, "no node of the pool"
    await backend.delete(spec.instance_id, handle, spec.storage)


async def test_what_cannot_be_launched_fails_permanently(
    standin: StandIn, backend: KubernetesBackend
) -> None:
    root = _spec(user="0:0")
    with pytest.raises(PermanentBackendError, match="root"):
        await backend.start(root)
    assert _objects(standin, root.instance_id) == {}, "nothing is created"
    with pytest.raises(PermanentBackendError) as obs:
        await backend.start(_spec(storage=Storage("obs", Location(path="/b/x/"))))
    assert obs.value.code == "ModelArts.6324"
    refused = _spec(pod={"containers": [{"name": "sidecar"}]})
    with pytest.raises(PermanentBackendError, match=r"spec.containers\[1\].image"):
        await backend.start(refused)
    await backend.delete(refused.instance_id, None, refused.storage)


async def test_one_watch_serves_every_observation_and_relists_after_410(
    standin: StandIn, backend: KubernetesBackend
) -> None:
    specs = [_spec() for _ in range(3)]
    handles = [await backend.start(spec) for spec in specs]
    for spec, handle in zip(specs, handles, strict=True):
        await _observe_until(backend, spec.instance_id, handle, _ready)
    watcher = backend._pods
    assert watcher.relists == 1
    assert len(standin.store.watches) == 1, "one watch, whatever the number of instances"
    # More writes than the history keeps, then the stream ends: resuming from the last
    # version seen is answered 410, and the watch lists again.
    for index in range(40):
        standin.store.create("secrets", NS, {"metadata": {"name": f"noise-{index}"}})
    standin.store.close_watches()
    deadline = time.monotonic() + 10
    while watcher.relists < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert watcher.relists == 2 and watcher.synced
    for spec, handle in zip(specs, handles, strict=True):
        assert (await backend.observe(spec.instance_id, handle)).workload is Workload.READY
    await standin.controllers.kill(NS, handles[0].pod)
    await _observe_until(backend, specs[0].instance_id, handles[0],
                         lambda s: s.workload is Workload.ABSENT)
    for spec, handle in zip(specs, handles, strict=True):
        await backend.delete(spec.instance_id, handle, spec.storage)


async def test_an_unreachable_api_server_is_a_transient_error(
    standin: StandIn, backend: KubernetesBackend
) -> None:
    spec = _spec()
    handle = await backend.start(spec)
    await _observe_until(backend, spec.instance_id, handle, _ready)
    await standin.stop()
    deadline = time.monotonic() + 10
    while backend._pods.synced and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert not backend._pods.synced
    with pytest.raises(TransientBackendError):
        await backend.observe(spec.instance_id, handle)
    with pytest.raises(TransientBackendError):
        await backend.stop(spec.instance_id, handle)


async def test_check_reports_each_missing_permission(
    standin: StandIn, backend: KubernetesBackend, tmp_path: Path
) -> None:
    assert await backend.check() == [
        "missing permission: delete secrets in namespace demanager "
        "(deploy/kubernetes/rbac.yaml grants what the backend needs)"
    ]
    elsewhere = _backend(standin.url, tmp_path, namespace="nowhere")
    try:
        problems = await elsewhere.check()
        assert problems[0] == ("the namespace 'nowhere' does not exist "
                               "(kubectl create namespace nowhere)")
    finally:
        await elsewhere.close()
    unreachable = _backend("http://127.0.0.1:9", tmp_path)
    try:
        problems = await unreachable.check()
        assert len(problems) == 1
        assert problems[0].startswith("cannot reach the Kubernetes API server at http://127.0.0.1:9")
    finally:
        await unreachable.close()


def test_a_deployment_name_must_be_a_label_value(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="label"):
        KubernetesBackend(KubernetesOptions(server="http://127.0.0.1:9"),
                          BackendContext(data_dir=tmp_path, instance_label="not valid!"))


async def test_an_api_server_down_from_the_start_fails_observations_fast(
    tmp_path: Path,
) -> None:
    down = _backend("http://127.0.0.1:9", tmp_path, request_timeout_seconds=0.5)
    try:
        for _ in range(3):  # after the first sync's grace, each fails at once
            with pytest.raises(TransientBackendError):
                await down.observe("DE-x", None)
    finally:
        await down.close()


# --- object storage ---------------------------------------------------------------------

PROJECT_KEY_ID, PROJECT_SECRET = "AKIDPROJ", "the-project-secret-key"


class _Directory:
    """The operator's keys and grants, as ``store/objectaccess.py`` keeps them."""

    def __init__(self) -> None:
        self.keys: dict[str, ProjectKeys] = {
            "proj": ProjectKeys(PROJECT_KEY_ID, SecretStr(PROJECT_SECRET))}

    async def lookup(self, project_id: str, bucket: str) -> BucketLookup:
        return BucketLookup(project_keys=self.keys.get(project_id), granted_to=None)


@pytest.fixture
async def s3_backend(standin: StandIn, tmp_path: Path) -> AsyncIterator[KubernetesBackend]:
    access = ObjectAccess(S3Options(endpoint_url="https://obs.example"), _Directory())
    built = KubernetesBackend(KubernetesOptions(server=standin.url, address="pod"),
                              BackendContext(data_dir=tmp_path, object_access=access))
    try:
        yield built
    finally:
        await built.close()


async def test_a_bucket_instance_gets_its_keys_in_a_secret_only_the_sync_containers_read(
    standin: StandIn, s3_backend: KubernetesBackend
) -> None:
    spec = _spec(storage=Storage("obs", Location(path="/bucket-a/nb/")),
                 extend=(Storage("obsfs", Location(path="datasets", mount_path="/data",
                                                   access_modes="ReadOnlyMany")),))
    handle = await s3_backend.start(spec)
    objects = _objects(standin, spec.instance_id)
    assert set(objects) == {"secrets", "pods", "services"}, "no claim: the work dir is a bucket"
    secrets = {obj["metadata"]["name"]: obj for _, obj in standin.store.all()
               if obj["kind"] == "Secret"
               and obj["metadata"]["labels"].get(manifests.INSTANCE) == spec.instance_id}
    stored = secrets[manifests.storage_secret_name(spec.instance_id)]
    assert base64.b64decode(stored["data"]["secret-access-key-0"]).decode() == PROJECT_SECRET
    pod = objects["pods"]
    assert [c["name"] for c in pod["spec"]["initContainers"]] == ["sync-down", "sync"]
    notebook = pod["spec"]["containers"][0]
    assert {"mountPath": "/data", "name": "s3-mount-0", "readOnly": True} in (
        notebook["volumeMounts"])
    assert PROJECT_SECRET not in str(pod) and PROJECT_SECRET not in handle.model_dump_json()
    assert not any(e["name"].startswith("AWS_") for e in notebook["env"])
    await _observe_until(s3_backend, spec.instance_id, handle, _ready)

    await s3_backend.stop(spec.instance_id, handle)
    assert _objects(standin, spec.instance_id) == {}, "both secrets go with the pod"
    await s3_backend.start(spec)
    await s3_backend.delete(spec.instance_id, None, spec.storage)
    deadline = time.monotonic() + 10
    while _objects(standin, spec.instance_id) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert _objects(standin, spec.instance_id) == {}


async def test_a_bucket_beside_the_volume_is_owned_by_the_claim_and_refusals_are_permanent(
    standin: StandIn, s3_backend: KubernetesBackend
) -> None:
    scratch = Storage("obsfs", Location(path="scratch", mount_path="/home/ma-user/work/s",
                                        access_modes="ReadWriteMany"))
    spec = _spec(extend=(scratch,))
    await s3_backend.start(spec)
    objects = _objects(standin, spec.instance_id)
    claim_uid = objects["persistentvolumeclaims"]["metadata"]["uid"]
    stored = next(obj for _, obj in standin.store.all() if obj["metadata"]["name"]
                  == manifests.storage_secret_name(spec.instance_id))
    assert stored["metadata"]["ownerReferences"][0]["uid"] == claim_uid
    await s3_backend.delete(spec.instance_id, None, spec.storage)

    other = _spec(storage=Storage("obs", Location(path="/bucket-b/nb/")))
    refused = LaunchSpec(**{**other.__dict__, "project_id": "no-keys"})
    with pytest.raises(PermanentBackendError) as denied:
        await s3_backend.start(refused)
    assert denied.value.code == "ModelArts.6319", "neither project nor deployment keys"
    assert _objects(standin, refused.instance_id) == {}, "nothing is created"


async def test_a_failed_first_sync_fails_the_start_with_the_agents_line(
    standin: StandIn, s3_backend: KubernetesBackend
) -> None:
    spec = _spec(storage=Storage("obs", Location(path="/bucket-a/nb/")))
    handle = await s3_backend.start(spec)
    line = "demanager sync: OBS access error: the bucket 'bucket-a' does not exist."
    # What the kubelet reports when the init container exits 1 (the stand-in runs none).
    standin.store.update("pods", NS, handle.pod, lambda pod: pod["status"].update({
        "phase": "Failed",
        "initContainerStatuses": [{
            "name": "sync-down", "image": "i", "imageID": "", "ready": False,
            "restartCount": 0, "state": {"terminated": {"exitCode": 1, "message": line}}}],
    }))
    seen = await _observe_until(s3_backend, spec.instance_id, handle,
                                lambda seen: seen.failure is not None)
    assert seen.failure is not None and seen.failure.code == "ModelArts.6320"
    assert "does not exist" in seen.failure.message
    await s3_backend.delete(spec.instance_id, handle, spec.storage)
