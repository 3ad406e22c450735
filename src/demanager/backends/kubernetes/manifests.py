"""What the Kubernetes backend creates, built by pure functions as plain dicts.

Per instance, in the backend's namespace, each named after the instance
(``object_name``: ``dm-`` and the instance id in lower case):

* a PersistentVolumeClaim, the instance's EVS volume. It owns everything else, so
  deleting it removes the whole instance (Kubernetes' garbage collector follows the
  owner references);
* a Secret ``…-token`` holding the notebook's per-launch token, which reaches Jupyter
  as ``JUPYTER_TOKEN`` through a ``secretKeyRef``, so the token is in no pod spec. It
  must exist before the pod that reads it (else the kubelet reports
  CreateContainerConfigError), so the claim owns it, not the pod; a stop deletes it;
* the Pod, owned by the claim: one notebook container, never root, no privilege
  escalation, no capabilities, no service-account token, the claim mounted at the
  recipe's work dir, the flavor's CPU, memory and GPUs as requests and limits;
* a ClusterIP Service selecting the pod, owned by the pod;
* for an instance with buckets (``obs``, ``obsfs``: ``objectstore.mounts``), a Secret
  ``…-s3`` with the S3 keys and the sync agent's config, and in the pod an emptyDir per
  bucket, one for the sync manifests, an init container ``sync-down`` (``agent down``)
  and a sidecar ``sync`` (``agent run``, a restartable init container, so that it
  starts before the notebook and gets SIGTERM only after the notebook has ended). Only
  those two containers see the Secret; the notebook sees the folders. An instance
  whose working directory is a bucket has no claim: its Secrets and pod are owned by
  nothing, and a stop deletes them by name.

Everything carries ``app.kubernetes.io/managed-by: demanager``, the instance's id
(``demanager.io/instance``) and the deployment's name (``demanager.io/deployment``).
tests/backends/test_kube_manifests.py checks the output against the published schemas
of several Kubernetes versions.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from demanager.backends.base import LaunchSpec
from demanager.backends.options import KubernetesOptions, KubernetesRecipe
from demanager.domain.catalog import Resources
from demanager.domain.instance import WORK_DIR, Storage
from demanager.objectstore.agent import key_variables
from demanager.objectstore.mounts import BucketMount
from demanager.objectstore.options import S3Options

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "demanager"
INSTANCE = "demanager.io/instance"
DEPLOYMENT = "demanager.io/deployment"
LAUNCHED_AT = "demanager.io/launched-at"
"""Annotation of the pod: when it was launched, in ms on the engine's clock, so that a
restarted server adopting the pod knows its start-timeout origin."""
TOKEN_KEY = "token"
TOKEN_ENV = "JUPYTER_TOKEN"
CONTAINER = "notebook"
VOLUME = "work"
PORT_NAME = "http"
DEFAULT_VOLUME_GIB = 5
NAME_MAX = 57
"""Object names stay within 57 characters, so that ``…-token`` is still a 63-character
DNS label, as Service names and pod host names must be."""
TOKEN_SUFFIX = "-token"
S3_SUFFIX = "-s3"
SYNC_DOWN = "sync-down"
SYNC = "sync"
SYNC_CONFIG_KEY = "config.json"
SYNC_CONFIG_DIR = "/etc/demanager-sync"
SYNC_FOLDERS = "/sync"
"""Where the sync containers see the buckets' folders (``/sync/{mount name}``)."""
SYNC_STATE = "/sync-state"
"""Where they keep the sync manifests: a volume of its own, outside every folder the
notebook sees, so that a notebook cannot edit what decides deletions."""
SYNC_STATE_VOLUME = "sync-state"
SYNC_CONFIG_VOLUME = "sync-config"

_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")


class ManifestError(ValueError):
    """The catalog's recipe or the deployment's settings cannot make a valid object."""


@dataclass(frozen=True)
class Owner:
    """An object that owns another: deleting it deletes the other."""

    kind: str
    name: str
    uid: str
    api_version: str = "v1"


# --- names and labels -------------------------------------------------------------------


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:8]


def label_value(value: str) -> str:
    """``value`` when it is a valid label value, else a valid one made from it; a digest
    of the original keeps distinct values distinct."""
    if _LABEL_VALUE.fullmatch(value):
        return value
    cleaned = re.sub(r"[^-A-Za-z0-9_.]+", "-", value)[:54].strip("-_.")
    return f"{cleaned}-{_digest(value)}" if cleaned else _digest(value)


def object_name(instance_id: str) -> str:
    """``dm-`` and the instance id in lower case (``DE-<uuid>`` gives 42 characters),
    or, for an id that is no DNS label, a cleaned prefix of it and a digest."""
    lowered = instance_id.lower()
    cleaned = re.sub(r"[^a-z0-9-]+", "-", lowered).strip("-")
    name = f"dm-{cleaned}"
    if cleaned == lowered and len(name) <= NAME_MAX:
        return name
    return f"dm-{cleaned[:44]}".rstrip("-") + f"-{_digest(instance_id)}"


def secret_name(instance_id: str) -> str:
    return object_name(instance_id) + TOKEN_SUFFIX


def storage_secret_name(instance_id: str) -> str:
    return object_name(instance_id) + S3_SUFFIX


def deployment_labels(deployment: str) -> dict[str, str]:
    """What selects every object of one deployment (the shared watch's selector)."""
    return {MANAGED_BY: MANAGER, DEPLOYMENT: deployment}


def instance_labels(instance_id: str, deployment: str) -> dict[str, str]:
    return {**deployment_labels(deployment), INSTANCE: label_value(instance_id)}


def service_host(instance_id: str, namespace: str, cluster_domain: str) -> str:
    """The cluster DNS name of the instance's Service."""
    return f"{object_name(instance_id)}.{namespace}.svc.{cluster_domain}"


def _metadata(
    name: str, namespace: str, labels: Mapping[str, str], owner: Owner | None = None
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": dict(labels)}
    if owner is not None:
        meta["ownerReferences"] = [
            {"apiVersion": owner.api_version, "kind": owner.kind, "name": owner.name,
             "uid": owner.uid}
        ]
    return meta


# --- quantities -------------------------------------------------------------------------


def cpu_quantity(cpus: float) -> str:
    """Whole cores as ``2``, fractions in millicores (``0.5`` → ``500m``)."""
    if cpus <= 0:
        raise ManifestError(f"a flavor needs a positive CPU count, not {cpus}")
    if cpus == int(cpus):
        return str(int(cpus))
    return f"{round(cpus * 1000)}m"


def memory_quantity(size: int) -> str:
    """Bytes in the largest binary unit that divides them (``1Gi``, ``512Mi``)."""
    if size <= 0:
        raise ManifestError(f"a flavor needs a positive memory size, not {size}")
    for suffix, unit in (("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if size % unit == 0:
            return f"{size // unit}{suffix}"
    return str(size)


def resources(flavor: Resources, gpu_resource: str) -> dict[str, dict[str, str]]:
    """The flavor's CPU, memory and GPUs as requests equal to the limits: the scheduler
    reserves what the flavor promises, and the pod is in the Guaranteed QoS class."""
    amounts = {"cpu": cpu_quantity(flavor.cpus)}
    if flavor.memory_bytes is not None:
        amounts["memory"] = memory_quantity(flavor.memory_bytes)
    if flavor.gpus > 0:
        amounts[gpu_resource] = str(flavor.gpus)
    return {"requests": dict(amounts), "limits": dict(amounts)}


def volume_size_gib(storage: Storage) -> int:
    return storage.location.volume_size or DEFAULT_VOLUME_GIB


# --- templates and overrides ------------------------------------------------------------


def run_as(user: str) -> tuple[int, int]:
    """``uid:gid`` (or ``uid``, the group then the same number) as numbers; never root."""
    match = re.fullmatch(r"(\d+)(?::(\d+))?", user.strip())
    if match is None:
        raise ManifestError(
            f"launch.kubernetes.user must be numeric uid[:gid] (Kubernetes cannot look "
            f"names up), not {user!r}"
        )
    uid = int(match.group(1))
    gid = int(match.group(2)) if match.group(2) is not None else uid
    if uid == 0:
        raise ManifestError("launch.kubernetes.user must not be root (uid 0)")
    return uid, gid


def fill(template: str, values: Mapping[str, str]) -> str:
    try:
        return template.format(**values)
    except (KeyError, IndexError, ValueError) as exc:
        raise ManifestError(f"bad launch template {template!r} in the catalog: {exc}") from exc


def merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``extra`` over ``base``: mappings merge key by key, lists are extended, any other
    value replaces. Neither argument is changed."""
    merged = dict(base)
    for key, value in extra.items():
        current = merged.get(key)
        if isinstance(current, Mapping) and isinstance(value, Mapping):
            merged[key] = merge(current, value)
        elif isinstance(current, list) and isinstance(value, list):
            merged[key] = [*current, *value]
        else:
            merged[key] = value
    return merged


# --- the objects ------------------------------------------------------------------------


def volume_claim(
    *, instance_id: str, namespace: str, deployment: str, size_gib: int,
    storage_class: str | None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": f"{size_gib}Gi"}},
    }
    if storage_class is not None:
        spec["storageClassName"] = storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _metadata(
            object_name(instance_id), namespace, instance_labels(instance_id, deployment)
        ),
        "spec": spec,
    }


def token_secret(
    *, instance_id: str, namespace: str, deployment: str, token: str, owner: Owner | None
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(
            secret_name(instance_id), namespace, instance_labels(instance_id, deployment), owner
        ),
        "type": "Opaque",
        "data": {TOKEN_KEY: base64.b64encode(token.encode()).decode()},
    }


# --- buckets -----------------------------------------------------------------------------


@dataclass(frozen=True)
class BucketSync:
    """One of the instance's buckets and the S3 options (with keys) that reach it."""

    mount: BucketMount
    options: S3Options


def _key_pairs(syncs: Sequence[BucketSync]) -> list[tuple[str, str]]:
    """The distinct key pairs, in the order of first use: pair ``n`` reaches the agent
    as ``key_variables(n)``."""
    pairs: list[tuple[str, str]] = []
    for sync in syncs:
        assert sync.options.access_key_id and sync.options.secret_access_key is not None
        pair = (sync.options.access_key_id, sync.options.secret_access_key.get_secret_value())
        if pair not in pairs:
            pairs.append(pair)
    return pairs


def _volume_of(mount: BucketMount) -> str:
    return f"s3-{mount.name}"


def sync_config(syncs: Sequence[BucketSync]) -> dict[str, Any]:
    """The agent's config (``objectstore/agent.py``): no keys, only where things are.
    The endpoint is the deployment's, the same for every bucket."""
    first = syncs[0].options
    pairs = _key_pairs(syncs)
    mounts = []
    for sync in syncs:
        opts, mount = sync.options, sync.mount
        assert opts.access_key_id and opts.secret_access_key is not None
        pair = (opts.access_key_id, opts.secret_access_key.get_secret_value())
        mounts.append({
            "name": mount.name,
            "bucket": mount.where.bucket,
            "prefix": mount.where.prefix,
            "folder": f"{SYNC_FOLDERS}/{mount.name}",
            "manifest": f"{SYNC_STATE}/{mount.name}.json",
            "read_only": mount.read_only,
            "credentials": pairs.index(pair),
        })
    return {
        "endpoint_url": first.endpoint_url,
        "region": first.region,
        "addressing_style": first.addressing_style,
        "mounts": mounts,
    }


def storage_secret(
    *, instance_id: str, namespace: str, deployment: str, syncs: Sequence[BucketSync],
    owner: Owner | None,
) -> dict[str, Any]:
    """The sync containers' Secret: the agent's config and every key pair it needs."""
    data = {SYNC_CONFIG_KEY: json.dumps(sync_config(syncs), sort_keys=True)}
    for n, (key_id, secret) in enumerate(_key_pairs(syncs)):
        data[f"access-key-id-{n}"] = key_id
        data[f"secret-access-key-{n}"] = secret
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(
            storage_secret_name(instance_id), namespace,
            instance_labels(instance_id, deployment), owner,
        ),
        "type": "Opaque",
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def notebook_path(mount: BucketMount, work_dir: str) -> str:
    """Where the notebook sees a bucket: the contract's working directory (and what is
    under it) is the recipe's ``work_dir`` here, other paths are kept as they are."""
    if mount.mount_path == WORK_DIR:
        return work_dir
    if mount.mount_path.startswith(WORK_DIR + "/"):
        return posixpath.join(work_dir, mount.mount_path[len(WORK_DIR) + 1 :])
    return mount.mount_path


def _sync_container(
    name: str, args: list[str], syncs: Sequence[BucketSync], secret: str, image: str,
    options: KubernetesOptions, security: Mapping[str, Any],
) -> dict[str, Any]:
    env: list[dict[str, Any]] = []
    for n in range(len(_key_pairs(syncs))):
        for variable, key in zip(key_variables(n),
                                 (f"access-key-id-{n}", f"secret-access-key-{n}"), strict=True):
            env.append({"name": variable,
                        "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}})
    amounts = {"cpu": options.sync_cpu, "memory": options.sync_memory}
    mounts: list[dict[str, Any]] = [
        {"name": _volume_of(s.mount), "mountPath": f"{SYNC_FOLDERS}/{s.mount.name}"}
        for s in syncs
    ]
    mounts += [
        {"name": SYNC_STATE_VOLUME, "mountPath": SYNC_STATE},
        {"name": SYNC_CONFIG_VOLUME, "mountPath": SYNC_CONFIG_DIR, "readOnly": True},
    ]
    return {
        "name": name,
        "image": image,
        "imagePullPolicy": options.image_pull_policy,
        "command": [*options.sync_command, *args,
                    "--config", f"{SYNC_CONFIG_DIR}/{SYNC_CONFIG_KEY}"],
        "env": env,
        "volumeMounts": mounts,
        "resources": {"requests": dict(amounts), "limits": dict(amounts)},
        "securityContext": copy.deepcopy(dict(security)),
        # A failed sync's one-line reason becomes the container's termination message.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def sync_containers(
    instance_id: str, syncs: Sequence[BucketSync], image: str, options: KubernetesOptions,
    security: Mapping[str, Any],
) -> list[dict[str, Any]]:
    """The init container that fills the folders, then the sidecar that uploads."""
    secret = storage_secret_name(instance_id)
    down = _sync_container(SYNC_DOWN, ["down"], syncs, secret, image, options, security)
    # How often is the deployment's choice (DEMANAGER_S3__SYNC_SECONDS), as on every host.
    every = f"{syncs[0].options.sync_seconds:g}"
    run = _sync_container(SYNC, ["run", "--every", every], syncs, secret, image, options,
                          security)
    # A restartable init container is a sidecar: it starts before the notebook and is
    # stopped after it, so that its last upload sees the notebook's last writes.
    run["restartPolicy"] = "Always"
    return [down, run]


def sync_volumes(instance_id: str, syncs: Sequence[BucketSync]) -> list[dict[str, Any]]:
    volumes: list[dict[str, Any]] = [
        {"name": _volume_of(s.mount), "emptyDir": {}} for s in syncs
    ]
    volumes += [
        {"name": SYNC_STATE_VOLUME, "emptyDir": {}},
        {"name": SYNC_CONFIG_VOLUME, "secret": {
            "secretName": storage_secret_name(instance_id),
            # Only the config becomes a file; the keys reach the agent as variables.
            "items": [{"key": SYNC_CONFIG_KEY, "path": SYNC_CONFIG_KEY}],
            "defaultMode": 0o440,
        }},
    ]
    return volumes


def service(
    *, instance_id: str, namespace: str, deployment: str, port: int, owner: Owner
) -> dict[str, Any]:
    labels = instance_labels(instance_id, deployment)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(object_name(instance_id), namespace, labels, owner),
        "spec": {
            "type": "ClusterIP",
            "selector": labels,
            "ports": [
                {"name": PORT_NAME, "port": port, "targetPort": PORT_NAME, "protocol": "TCP"}
            ],
        },
    }


def pod(
    spec: LaunchSpec,
    recipe: KubernetesRecipe,
    options: KubernetesOptions,
    *,
    deployment: str,
    owner: Owner | None,
    launched_at: int,
    syncs: Sequence[BucketSync] = (),
) -> dict[str, Any]:
    """The notebook's pod: ``recipe`` fills the container, ``spec`` the instance's size,
    volume and pool, ``options`` the deployment's choices, ``syncs`` its buckets (the
    working directory's first, when it is one). Without a claim (the working directory
    is a bucket) ``owner`` is None."""
    instance_id = spec.instance_id
    uid, gid = run_as(recipe.user)
    values = {
        "port": str(recipe.port),
        "base_url": f"/notebooks/{instance_id}/",
        "cpus": str(spec.flavor.params.get("CPU", 1)),
        "work_dir": recipe.work_dir,
    }
    if TOKEN_ENV in recipe.env:
        raise ManifestError(f"launch.kubernetes.env must not set {TOKEN_ENV}: demanager does")
    env: list[dict[str, Any]] = [
        {"name": key, "value": fill(value, values)} for key, value in recipe.env.items()
    ]
    env.append({
        "name": TOKEN_ENV,
        "valueFrom": {"secretKeyRef": {"name": secret_name(instance_id), "key": TOKEN_KEY}},
    })
    security: dict[str, Any] = {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": gid,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    on_evs = spec.storage.type == "evs"
    mounts: list[dict[str, Any]] = (
        [{"name": VOLUME, "mountPath": recipe.work_dir}] if on_evs else []
    )
    for sync in syncs:
        mount: dict[str, Any] = {"name": _volume_of(sync.mount),
                                 "mountPath": notebook_path(sync.mount, recipe.work_dir)}
        if sync.mount.read_only:
            mount["readOnly"] = True
        mounts.append(mount)
    image = recipe.image or spec.profile.image
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": image,
        "imagePullPolicy": options.image_pull_policy,
        "command": [fill(part, values) for part in recipe.command],
        "env": env,
        "ports": [{"name": PORT_NAME, "containerPort": recipe.port, "protocol": "TCP"}],
        "workingDir": recipe.work_dir,
        "volumeMounts": mounts,
        "resources": resources(spec.flavor.resources, options.gpu_resource),
        "securityContext": copy.deepcopy(security),
        # The kubelet's view only (Service endpoints, kubectl); demanager itself asks
        # Jupyter's /api/status, which needs the token a probe here would not have.
        "readinessProbe": {
            "tcpSocket": {"port": PORT_NAME},
            "periodSeconds": 2,
            "failureThreshold": 3,
        },
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        # Service links would put every instance's service address into every pod.
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": options.stop_timeout_seconds
        + (options.sync_grace_seconds if syncs else 0),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": uid,
            "runAsGroup": gid,
            "fsGroup": gid,  # the volume's files are the notebook's group's
            "fsGroupChangePolicy": "OnRootMismatch",
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumes": [{"name": VOLUME, "persistentVolumeClaim": {"claimName": object_name(
            instance_id)}}] if on_evs else [],
        "containers": [merge(container, recipe.container)],
    }
    if syncs:
        if recipe.pod.get("shareProcessNamespace"):
            # The notebook runs as the sync containers' user: it could read their keys.
            raise ManifestError("launch.kubernetes.pod must not share the process namespace "
                                "of a pod with object storage")
        pod_spec["volumes"] += sync_volumes(instance_id, syncs)
        pod_spec["initContainers"] = sync_containers(
            instance_id, syncs, options.sync_image or image, options, security
        )
    if spec.pool_id is not None:
        pool = spec.pool_id
        if not _LABEL_VALUE.fullmatch(pool):
            raise ManifestError(f"pool id {pool!r} is not a valid Kubernetes label value")
        pod_spec["nodeSelector"] = {options.pool_label: pool}
        pod_spec["tolerations"] = [
            {"key": options.pool_label, "operator": "Equal", "value": pool,
             "effect": "NoSchedule"}
        ]
    metadata = _metadata(
        object_name(instance_id), options.namespace, instance_labels(instance_id, deployment),
        owner,
    )
    metadata["annotations"] = {LAUNCHED_AT: str(launched_at)}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": merge(pod_spec, recipe.pod),
    }
