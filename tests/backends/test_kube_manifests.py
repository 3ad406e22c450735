"""The Kubernetes backend's objects, built by pure functions: their content, and their
validity against the published OpenAPI schemas of several Kubernetes versions, offline
(kubernetes-validate ships the schemas). The deployment manifests under
deploy/kubernetes/ are held to the same schemas."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version, major_minor
from lightkube.resources.core_v1 import Pod

from demanager.backends.base import LaunchSpec
from demanager.backends.kubernetes import manifests, pods
from demanager.backends.kubernetes.backend import PERMISSIONS
from demanager.backends.kubernetes.manifests import ManifestError, Owner
from demanager.backends.options import KubernetesOptions, KubernetesRecipe
from demanager.domain.catalog import Flavor, Profile, Resources
from demanager.domain.instance import Location, Storage
from demanager.objectstore.agent import AgentConfig
from demanager.objectstore.mounts import bucket_mounts
from demanager.objectstore.options import S3Options

VERSIONS = ("1.30", "1.33", major_minor(latest_version()))
"""The oldest minor still common in managed clusters, a middle one, and the newest the
installed kubernetes-validate ships."""
DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
INSTANCE = "DE-0f6a1c2e-3b4d-4e5f-8a9b-0c1d2e3f4a5b"
DNS_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
CLAIM = Owner("PersistentVolumeClaim", "dm-x", "5b1c0d6e-0000-4000-8000-000000000001")


def _profile(**launch: Any) -> Profile:
    return Profile(id="p", name="p", description="", flavor_type="CPU",
                   namespace="demanager", image_name="notebook", image_tag="latest",
                   category=None, launch={"kubernetes": launch} if launch else {})


def _spec(*, gpus: int = 0, pool: str | None = None, size: int | None = 10,
          cpu: float = 2, memory: str = "8GiB") -> LaunchSpec:
    flavor = Flavor(name="f", type="GPU" if gpus else "CPU",
                    params={"CPU": cpu, "memory": memory, "GPU": gpus})
    return LaunchSpec(instance_id=INSTANCE, project_id="proj", profile=_profile(),
                      flavor=flavor, storage=Storage("evs", Location(volume_size=size)),
                      extend_storage=(), now_ms=1, pool_id=pool)


def _pod(spec: LaunchSpec | None = None, recipe: KubernetesRecipe | None = None,
         options: KubernetesOptions | None = None) -> dict[str, Any]:
    return manifests.pod(spec or _spec(), recipe or KubernetesRecipe(),
                         options or KubernetesOptions(), deployment="demanager", owner=CLAIM,
                         launched_at=1234)


def _container(pod: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = pod["spec"]["containers"][0]
    return container


# --- names and labels ---------------------------------------------------------------------


def test_names_are_dns_labels_with_room_for_the_token_suffix() -> None:
    name = manifests.object_name(INSTANCE)
    assert name == "dm-" + INSTANCE.lower()
    assert manifests.secret_name(INSTANCE) == name + "-token"
    for odd in ("DE-" + "A" * 80, "de_weird id!", "-", "DE-X", "x" * 100):
        made = manifests.object_name(odd)
        assert DNS_LABEL.fullmatch(made) and len(made) <= manifests.NAME_MAX, made
        assert len(manifests.secret_name(odd)) <= 63
    assert manifests.object_name("a_b") != manifests.object_name("a-b")


def test_label_values_are_kept_or_made_valid() -> None:
    assert manifests.label_value(INSTANCE) == INSTANCE
    for odd in ("has space", "x" * 80, "-leading", "ünïcode"):
        made = manifests.label_value(odd)
        assert len(made) <= 63 and re.fullmatch(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?",
                                                made), made
    labels = manifests.instance_labels(INSTANCE, "demanager")
    assert labels == {"app.kubernetes.io/managed-by": "demanager",
                      "demanager.io/instance": INSTANCE, "demanager.io/deployment": "demanager"}


def test_service_host() -> None:
    assert manifests.service_host(INSTANCE, "nb", "cluster.local") == (
        f"dm-{INSTANCE.lower()}.nb.svc.cluster.local")


# --- quantities and helpers ---------------------------------------------------------------


@pytest.mark.parametrize(("cpus", "quantity"), [(1, "1"), (2.0, "2"), (0.5, "500m"),
                                                (2.5, "2500m"), (0.25, "250m")])
def test_cpu_quantities(cpus: float, quantity: str) -> None:
    assert manifests.cpu_quantity(cpus) == quantity


@pytest.mark.parametrize(("size", "quantity"), [(2**30, "1Gi"), (512 * 2**20, "512Mi"),
                                                (3 * 2**10, "3Ki"), (1000, "1000")])
def test_memory_quantities(size: int, quantity: str) -> None:
    assert manifests.memory_quantity(size) == quantity


def test_resources_request_what_they_limit_and_gpus_as_the_extended_resource() -> None:
    made = manifests.resources(Resources(cpus=4, memory_bytes=16 * 2**30, gpus=1), "amd.com/gpu")
    assert made["requests"] == made["limits"] == {"cpu": "4", "memory": "16Gi",
                                                  "amd.com/gpu": "1"}
    assert manifests.resources(Resources(1, None, 0), "nvidia.com/gpu")["limits"] == {"cpu": "1"}
    with pytest.raises(ManifestError):
        manifests.cpu_quantity(0)


@pytest.mark.parametrize(("user", "ids"), [("1000:100", (1000, 100)), ("1001", (1001, 1001))])
def test_users(user: str, ids: tuple[int, int]) -> None:
    assert manifests.run_as(user) == ids


@pytest.mark.parametrize("user", ["0:0", "0", "jovyan", "1000:users", ""])
def test_users_that_cannot_run_a_notebook(user: str) -> None:
    with pytest.raises(ManifestError):
        manifests.run_as(user)


def test_merge_merges_mappings_extends_lists_and_replaces_the_rest() -> None:
    base = {"a": {"b": 1, "c": [1]}, "d": 1, "e": [1]}
    merged = manifests.merge(base, {"a": {"c": [2], "x": 2}, "d": 3, "e": [2], "f": {}})
    assert merged == {"a": {"b": 1, "c": [1, 2], "x": 2}, "d": 3, "e": [1, 2], "f": {}}
    assert base == {"a": {"b": 1, "c": [1]}, "d": 1, "e": [1]}, "the base is not changed"


# --- the objects --------------------------------------------------------------------------


def test_the_pod_runs_the_notebook_unprivileged_with_its_volume_and_token() -> None:
    pod = _pod()
    meta, spec, container = pod["metadata"], pod["spec"], _container(pod)
    assert meta["name"] == manifests.object_name(INSTANCE)
    assert meta["labels"]["demanager.io/instance"] == INSTANCE
    assert meta["ownerReferences"] == [{"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                                        "name": CLAIM.name, "uid": CLAIM.uid}]
    assert meta["annotations"] == {manifests.LAUNCHED_AT: "1234"}
    assert spec["restartPolicy"] == "Never"
    assert spec["automountServiceAccountToken"] is False
    assert spec["enableServiceLinks"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert (spec["securityContext"]["runAsUser"], spec["securityContext"]["fsGroup"]) == (
        1000, 100)
    assert container["securityContext"] == {
        "runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 100,
        "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
    }
    assert container["image"] == "demanager/notebook:latest"
    assert f"--ServerApp.base_url=/notebooks/{INSTANCE}/" in container["command"]
    assert "--ServerApp.port=8888" in container["command"]
    assert "--ServerApp.root_dir=/home/jovyan/work" in container["command"]
    assert container["env"][-1] == {"name": "JUPYTER_TOKEN", "valueFrom": {"secretKeyRef": {
        "name": manifests.secret_name(INSTANCE), "key": "token"}}}
    assert all("value" not in e or "token" not in e["value"] for e in container["env"])
    assert container["volumeMounts"] == [{"name": "work", "mountPath": "/home/jovyan/work"}]
    assert spec["volumes"] == [{"name": "work", "persistentVolumeClaim": {
        "claimName": manifests.object_name(INSTANCE)}}]
    assert container["resources"]["limits"] == {"cpu": "2", "memory": "8Gi"}
    assert container["readinessProbe"]["tcpSocket"] == {"port": "http"}
    assert "nodeSelector" not in spec and "tolerations" not in spec


# --- buckets ----------------------------------------------------------------------------

KEY_ID, SECRET = "AKIDPROJECT0001", "project-secret-key-0001"
OTHER_ID, OTHER_SECRET = "AKIDOTHER000002", "other-secret-key-0002"


def _s3(key_id: str = KEY_ID, secret: str = SECRET) -> S3Options:
    return S3Options.model_validate({"endpoint_url": "https://obs.example", "region": "r1",
                                     "addressing_style": "virtual", "access_key_id": key_id,
                                     "secret_access_key": secret})


def _bucket_spec(storage: Storage, *extend: Storage) -> LaunchSpec:
    return LaunchSpec(instance_id=INSTANCE, project_id="proj", profile=_profile(),
                      flavor=Flavor(name="f", type="CPU", params={"CPU": 2, "memory": "8GiB"}),
                      storage=storage, extend_storage=extend, now_ms=1)


def _syncs(spec: LaunchSpec, *options: S3Options) -> list[manifests.BucketSync]:
    mounts = bucket_mounts(spec.storage, spec.extend_storage)
    chosen = options or (_s3(),) * len(mounts)
    return [manifests.BucketSync(m, o) for m, o in zip(mounts, chosen, strict=True)]


OBS = Storage("obs", Location(path="/bucket-a/notebooks/"))
DATASET = Storage("obsfs", Location(path="datasets", mount_path="/data/sets",
                                    access_modes="ReadOnlyMany"))
SCRATCH = Storage("obsfs", Location(path="scratch", mount_path="/home/ma-user/work/scratch",
                                    access_modes="ReadWriteMany"))


def _bucket_pod(spec: LaunchSpec, syncs: list[manifests.BucketSync] | None = None,
                options: KubernetesOptions | None = None,
                owner: Owner | None = None) -> dict[str, Any]:
    return manifests.pod(spec, KubernetesRecipe(), options or KubernetesOptions(),
                         deployment="demanager", owner=owner, launched_at=1,
                         syncs=syncs if syncs is not None else _syncs(spec))


def test_a_bucket_working_directory_is_an_empty_dir_filled_and_emptied_by_sync_containers(
) -> None:
    spec = _bucket_spec(OBS, DATASET)
    pod = _bucket_pod(spec)
    pod_spec, notebook = pod["spec"], _container(pod)
    assert "ownerReferences" not in pod["metadata"], "no claim to own it"
    volumes = {v["name"]: v for v in pod_spec["volumes"]}
    assert set(volumes) == {"s3-work", "s3-mount-0", "sync-state", "sync-config"}, (
        "no claim: the working directory is the bucket's folder")
    assert volumes["s3-work"] == {"name": "s3-work", "emptyDir": {}}
    assert volumes["sync-state"] == {"name": "sync-state", "emptyDir": {}}
    assert volumes["sync-config"]["secret"]["items"] == [
        {"key": "config.json", "path": "config.json"}], "the keys never become files"
    assert notebook["volumeMounts"] == [
        {"name": "s3-work", "mountPath": "/home/jovyan/work"},
        {"name": "s3-mount-0", "mountPath": "/data/sets", "readOnly": True},
    ]
    down, run = pod_spec["initContainers"]
    assert (down["name"], run["name"]) == ("sync-down", "sync")
    assert "restartPolicy" not in down and run["restartPolicy"] == "Always", (
        "the sidecar outlives the notebook, so its last upload sees the last writes")
    agent = ["/opt/demanager-sync/bin/python", "-m", "demanager.objectstore.agent"]
    config = ["--config", "/etc/demanager-sync/config.json"]
    assert down["command"] == [*agent, "down", *config]
    assert run["command"] == [*agent, "run", "--every", "30", *config]
    for sync in (down, run):
        assert sync["image"] == notebook["image"], "the notebook image carries the agent"
        assert sync["securityContext"] == notebook["securityContext"]
        assert {m["mountPath"] for m in sync["volumeMounts"]} == {
            "/sync/work", "/sync/mount-0", "/sync-state", "/etc/demanager-sync"}
        assert not any(m.get("readOnly") for m in sync["volumeMounts"]
                       if m["mountPath"].startswith("/sync/")), "read-only mounts come down"
        assert sync["env"] == [
            {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {
                "name": manifests.storage_secret_name(INSTANCE), "key": "access-key-id-0"}}},
            {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {
                "name": manifests.storage_secret_name(INSTANCE),
                "key": "secret-access-key-0"}}},
        ]
        assert sync["resources"]["requests"] == sync["resources"]["limits"]
    assert pod_spec["terminationGracePeriodSeconds"] == 10 + 60


def test_the_keys_reach_only_the_sync_containers() -> None:
    spec = _bucket_spec(OBS, DATASET)
    pod = _bucket_pod(spec)
    text = str(pod)
    assert KEY_ID not in text and SECRET not in text, "keys are in the Secret, not the pod"
    notebook = _container(pod)
    secrets_seen = {e["valueFrom"]["secretKeyRef"]["name"] for e in notebook["env"]
                    if "valueFrom" in e}
    assert secrets_seen == {manifests.secret_name(INSTANCE)}, "only the token"
    assert not any(m["name"] == "sync-config" for m in notebook["volumeMounts"])
    assert not any(k.startswith("AWS_") for k in (e["name"] for e in notebook["env"]))


def test_the_storage_secret_holds_the_config_and_each_distinct_key_pair() -> None:
    spec = _bucket_spec(OBS, DATASET, SCRATCH)
    syncs = _syncs(spec, _s3(), _s3(OTHER_ID, OTHER_SECRET), _s3())
    secret = manifests.storage_secret(instance_id=INSTANCE, namespace="nb", deployment="d",
                                      syncs=syncs, owner=None)
    assert secret["metadata"]["name"] == manifests.storage_secret_name(INSTANCE)
    assert "ownerReferences" not in secret["metadata"]
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert data["access-key-id-0"] == KEY_ID and data["secret-access-key-0"] == SECRET
    assert data["access-key-id-1"] == OTHER_ID and data["secret-access-key-1"] == OTHER_SECRET
    assert len(data) == 5, "the third mount shares the first pair"
    config = json.loads(data["config.json"])
    assert KEY_ID not in data["config.json"] and SECRET not in data["config.json"]
    assert {k: config[k] for k in ("endpoint_url", "region", "addressing_style")} == {
        "endpoint_url": "https://obs.example", "region": "r1", "addressing_style": "virtual"}
    assert config["mounts"] == [
        {"name": "work", "bucket": "bucket-a", "prefix": "notebooks/",
         "folder": "/sync/work", "manifest": "/sync-state/work.json", "read_only": False,
         "credentials": 0},
        {"name": "mount-0", "bucket": "datasets", "prefix": "", "folder": "/sync/mount-0",
         "manifest": "/sync-state/mount-0.json", "read_only": True, "credentials": 1},
        {"name": "mount-1", "bucket": "scratch", "prefix": "", "folder": "/sync/mount-1",
         "manifest": "/sync-state/mount-1.json", "read_only": False, "credentials": 0},
    ]
    agent_config = AgentConfig.model_validate(config)
    assert all(not m.manifest.is_relative_to(m.folder) for m in agent_config.mounts)
    pod = _bucket_pod(spec, syncs)
    names = [e["name"] for e in pod["spec"]["initContainers"][0]["env"]]
    assert names == ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                     "AWS_ACCESS_KEY_ID_1", "AWS_SECRET_ACCESS_KEY_1"]


def test_buckets_beside_an_evs_volume_and_the_sync_settings() -> None:
    spec = _bucket_spec(Storage("evs", Location(volume_size=5)), SCRATCH)
    options = KubernetesOptions(sync_image="registry.example/sync:1",
                                sync_grace_seconds=300, stop_timeout_seconds=20,
                                sync_command=("sync-agent",))
    often = _s3().model_copy(update={"sync_seconds": 5.0})
    pod = _bucket_pod(spec, _syncs(spec, often), options=options, owner=CLAIM)
    assert pod["metadata"]["ownerReferences"][0]["uid"] == CLAIM.uid
    assert _container(pod)["volumeMounts"] == [
        {"name": "work", "mountPath": "/home/jovyan/work"},
        {"name": "s3-mount-0", "mountPath": "/home/jovyan/work/scratch"},
    ], "the EVS volume stays the working directory; the bucket appears inside it"
    assert pod["spec"]["volumes"][0]["name"] == "work"
    down, run = pod["spec"]["initContainers"]
    assert down["image"] == run["image"] == "registry.example/sync:1"
    assert run["command"][:4] == ["sync-agent", "run", "--every", "5"]
    assert pod["spec"]["terminationGracePeriodSeconds"] == 320
    assert _pod()["spec"]["terminationGracePeriodSeconds"] == 10, "no buckets, no sync grace"
    assert "initContainers" not in _pod()["spec"]


def test_a_pod_with_keys_shares_no_process_namespace() -> None:
    spec = _bucket_spec(OBS)
    with pytest.raises(ManifestError, match="process namespace"):
        manifests.pod(spec, KubernetesRecipe(pod={"shareProcessNamespace": True}),
                      KubernetesOptions(), deployment="d", owner=None, launched_at=1,
                      syncs=_syncs(spec))


def test_a_failed_sync_down_is_the_start_failure_with_its_last_line() -> None:
    pod = Pod.from_dict({"metadata": {"name": "p"}, "status": {
        "phase": "Failed",
        "initContainerStatuses": [{
            "name": "sync-down", "image": "i", "imageID": "", "ready": False,
            "restartCount": 0,
            "state": {"terminated": {"exitCode": 1, "message": (
                "demanager sync: bucket 'a' -> /sync/work: 1 downloaded\n"
                "demanager sync: OBS access error: access to the bucket 'b' was refused "
                "(credentials or permission).\n")}},
        }]}})
    failure = pods.launch_failure(pod)
    assert failure is not None and failure.code == "ModelArts.6320"
    assert failure.message.endswith("access to the bucket 'b' was refused "
                                    "(credentials or permission).")
    pulling = Pod.from_dict({"metadata": {"name": "p"}, "status": {
        "phase": "Pending",
        "initContainerStatuses": [{
            "name": "sync-down", "image": "sync:missing", "imageID": "", "ready": False,
            "restartCount": 0, "state": {"waiting": {"reason": "ErrImagePull"}}}]}})
    pulled = pods.launch_failure(pulling)
    assert pulled is not None and "sync:missing" in pulled.message


def test_a_dedicated_pool_is_a_node_selector_and_a_toleration() -> None:
    options = KubernetesOptions(pool_label="example.com/pool")
    spec = _pod(_spec(pool="pool-a1b2"), options=options)["spec"]
    assert spec["nodeSelector"] == {"example.com/pool": "pool-a1b2"}
    assert spec["tolerations"] == [{"key": "example.com/pool", "operator": "Equal",
                                    "value": "pool-a1b2", "effect": "NoSchedule"}]
    with pytest.raises(ManifestError):
        _pod(_spec(pool="not a label value"))


def test_the_recipe_fills_and_overrides_the_pod() -> None:
    recipe = KubernetesRecipe(
        image="registry.example/nb:1", port=9999, user="2000:3000", work_dir="/data",
        command=("start", "--port={port}", "--cpus={cpus}", "{base_url}", "{work_dir}"),
        env={"OMP_NUM_THREADS": "{cpus}"},
        pod={"priorityClassName": "notebooks", "tolerations": [{"operator": "Exists"}]},
        container={"resources": {"requests": {"cpu": "250m"}}},
    )
    pod = _pod(_spec(pool="p1"), recipe)
    container = _container(pod)
    assert container["image"] == "registry.example/nb:1"
    assert container["command"] == ["start", "--port=9999", "--cpus=2", f"/notebooks/{INSTANCE}/",
                                    "/data"]
    assert container["env"][0] == {"name": "OMP_NUM_THREADS", "value": "2"}
    assert container["ports"][0]["containerPort"] == 9999
    assert container["resources"]["requests"] == {"cpu": "250m", "memory": "8Gi"}
    assert container["resources"]["limits"]["cpu"] == "2"
    assert pod["spec"]["priorityClassName"] == "notebooks"
    assert len(pod["spec"]["tolerations"]) == 2, "lists are extended"
    assert pod["spec"]["securityContext"]["runAsUser"] == 2000


def test_recipes_that_cannot_make_a_pod() -> None:
    with pytest.raises(ManifestError, match="JUPYTER_TOKEN"):
        _pod(recipe=KubernetesRecipe(env={"JUPYTER_TOKEN": "fixed"}))
    with pytest.raises(ManifestError, match="template"):
        _pod(recipe=KubernetesRecipe(command=("{nope}",)))
    with pytest.raises(ManifestError, match="root"):
        _pod(recipe=KubernetesRecipe(user="0:0"))


def test_the_volume_claim_the_secret_and_the_service() -> None:
    claim = manifests.volume_claim(instance_id=INSTANCE, namespace="nb", deployment="d",
                                   size_gib=manifests.volume_size_gib(Storage("evs")),
                                   storage_class=None)
    assert claim["spec"] == {"accessModes": ["ReadWriteOnce"],
                             "resources": {"requests": {"storage": "5Gi"}}}
    assert "ownerReferences" not in claim["metadata"], "the claim owns, it is not owned"
    fast = manifests.volume_claim(instance_id=INSTANCE, namespace="nb", deployment="d",
                                  size_gib=20, storage_class="fast")
    assert fast["spec"]["storageClassName"] == "fast"

    secret = manifests.token_secret(instance_id=INSTANCE, namespace="nb", deployment="d",
                                    token="t0k3n", owner=CLAIM)
    assert base64.b64decode(secret["data"]["token"]) == b"t0k3n"
    assert secret["metadata"]["ownerReferences"][0]["kind"] == "PersistentVolumeClaim"

    pod_owner = Owner("Pod", "dm-x", "uid-of-the-pod")
    service = manifests.service(instance_id=INSTANCE, namespace="nb", deployment="d",
                                port=8888, owner=pod_owner)
    assert service["spec"]["selector"] == manifests.instance_labels(INSTANCE, "d")
    assert service["spec"]["ports"][0]["port"] == 8888
    assert service["metadata"]["ownerReferences"][0]["uid"] == "uid-of-the-pod"


# --- validity against the published schemas -----------------------------------------------


def _objects() -> dict[str, dict[str, Any]]:
    gpu_recipe = KubernetesRecipe(pod={"priorityClassName": "high"},
                                  container={"resources": {"requests": {"cpu": "1"}}})
    return {
        "pod": _pod(),
        "pod with a pool, GPUs and overrides": _pod(_spec(gpus=2, pool="p1", cpu=0.5,
                                                          memory="512MiB"), gpu_recipe),
        "volume claim": manifests.volume_claim(instance_id=INSTANCE, namespace="nb",
                                               deployment="demanager", size_gib=5,
                                               storage_class="standard"),
        "secret": manifests.token_secret(instance_id=INSTANCE, namespace="nb",
                                         deployment="demanager", token="t", owner=CLAIM),
        "service": manifests.service(instance_id=INSTANCE, namespace="nb",
                                     deployment="demanager", port=8888,
                                     owner=Owner("Pod", "dm-x", "u")),
        "pod with buckets": _bucket_pod(_bucket_spec(OBS, DATASET, SCRATCH)),
        "pod with buckets beside its volume": _bucket_pod(
            _bucket_spec(Storage("evs"), DATASET), owner=CLAIM),
        "object storage secret": manifests.storage_secret(
            instance_id=INSTANCE, namespace="nb", deployment="demanager",
            syncs=_syncs(_bucket_spec(OBS, DATASET)), owner=None),
    }


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("what", sorted(_objects()))
def test_the_objects_validate_against_the_published_schemas(what: str, version: str) -> None:
    kubernetes_validate.validate(_objects()[what], version, strict=True)


def test_validation_catches_a_wrong_object() -> None:
    pod = _pod()
    _container(pod)["securityContext"]["allowPrivilegeEscalation"] = "no"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pod, VERSIONS[0], strict=True)
    pod = _pod()
    pod["spec"]["restartPolicyy"] = "Never"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pod, VERSIONS[0], strict=True)


def _documents(name: str) -> list[dict[str, Any]]:
    with (DEPLOY / name).open(encoding="utf-8") as source:
        return [doc for doc in yaml.safe_load_all(source) if doc]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", ["rbac.yaml", "demanager.yaml"])
def test_the_deployment_manifests_validate(name: str, version: str) -> None:
    documents = _documents(name)
    assert documents
    for document in documents:
        kubernetes_validate.validate(document, version, strict=True)


def test_the_role_grants_exactly_what_the_backend_uses() -> None:
    role = next(d for d in _documents("rbac.yaml") if d["kind"] == "Role")
    granted = {(verb, resource) for rule in role["rules"] for verb in rule["verbs"]
               for resource in rule["resources"]}
    assert all(rule["apiGroups"] == [""] for rule in role["rules"])
    assert granted == set(PERMISSIONS)
    assert role["metadata"]["namespace"] == KubernetesOptions().namespace


def test_the_server_is_deployed_with_the_backend_and_two_replicas() -> None:
    deployment = next(d for d in _documents("demanager.yaml") if d["kind"] == "Deployment")
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["DEMANAGER_BACKEND"] == "kubernetes"
    assert pod["serviceAccountName"] == "demanager"
    secret = next(d for d in _documents("demanager.yaml") if d["kind"] == "Secret")
    assert {"DEMANAGER_SECRET_KEY", "DEMANAGER_DATABASE_URL"} <= set(secret["stringData"])
