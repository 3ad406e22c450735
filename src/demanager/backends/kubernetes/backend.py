"""The Kubernetes backend: each instance is a Pod, a PersistentVolumeClaim and a Service.

``manifests.py`` builds the objects, ``api.py`` makes the calls (and translates their
errors), ``watcher.py`` keeps one watch of the deployment's pods that ``observe``
answers from, and ``pods.py`` reads what a pod says. Every replica of demanager
reaches the cluster, so ``node`` is None: whichever replica holds an instance's lease
drives it.

* ``start`` deletes any pod of the instance and waits for it to go, makes sure the
  volume claim exists (unless the working directory is a bucket), writes a fresh token
  Secret (and, for buckets, a fresh ``…-s3`` Secret with the keys the project's buckets
  are reached with, looked up now), creates the pod and its Service.
* ``observe`` reads the pod from the watch's cache; when it runs, it asks Jupyter's
  ``/api/status`` with the token through the endpoint the proxy will use. A pod that
  cannot pull its image fails the start at once (``Observation.failure``). Given no
  handle it rebuilds one from the pod and its Secret (adoption after a crash).
* ``stop`` deletes the pod, the Service and the Secrets, and waits for the pod to go
  (which, with buckets, includes the sync container's last upload);
  ``delete`` also deletes the claim, which owns whatever might be left.

Errors are the contract's (``api.py``): an API server that cannot answer now is a
transient error, one that refuses to create an object a permanent one.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import Any

import httpx
import httpx2
from lightkube import ApiError
from lightkube.resources.core_v1 import PersistentVolumeClaim, Pod, Secret, Service
from lightkube.types import CascadeType

from demanager.backends import jupyter
from demanager.backends.base import BackendContext, Handle, LaunchSpec, recipe_of
from demanager.backends.kubernetes import manifests, pods
from demanager.backends.kubernetes.api import NamespaceApi, connect, name_of, uid_of
from demanager.backends.kubernetes.manifests import BucketSync, ManifestError, Owner
from demanager.backends.kubernetes.watcher import PodWatch
from demanager.backends.options import KubernetesOptions, KubernetesRecipe
from demanager.domain.instance import Endpoint, Storage
from demanager.domain.planning import Observation, Workload
from demanager.errors import (
    ObjectStorageAccessError,
    ObjectStorageCredentialsMissing,
    PermanentBackendError,
    TransientBackendError,
)
from demanager.objectstore.mounts import bucket_mounts

log = logging.getLogger(__name__)

PERMISSIONS: tuple[tuple[str, str], ...] = (
    ("get", "namespaces"),
    ("get", "pods"), ("list", "pods"), ("watch", "pods"), ("create", "pods"),
    ("delete", "pods"),
    ("get", "persistentvolumeclaims"), ("create", "persistentvolumeclaims"),
    ("delete", "persistentvolumeclaims"),
    ("get", "services"), ("create", "services"), ("delete", "services"),
    ("get", "secrets"), ("create", "secrets"), ("delete", "secrets"),
)
"""Every verb on every core resource the backend uses, in its namespace: ``check``
asks the API server about each, and deploy/kubernetes/rbac.yaml grants exactly these."""

GONE_POLL_CAP = 1.0
CACHE_GRACE_SECONDS = 2.0
"""After the API server says a deleted pod is gone, how long a stop waits for the
watch to say so too, so the next ``observe`` does not see it in the cache."""
TRANSIENT_RETRY = 2.0


class KubernetesHandle(Handle):
    pod: str
    uid: str
    """The pod's uid: a pod of the same name launched later is another workload."""
    token: str
    base_url: str
    port: int


class KubernetesBackend:
    name = "kubernetes"
    options_type = KubernetesOptions
    handle_type = KubernetesHandle
    recipe_type = KubernetesRecipe

    def __init__(self, options: KubernetesOptions, context: BackendContext) -> None:
        self.node: str | None = None
        if manifests.label_value(context.instance_label) != context.instance_label:
            raise ValueError(
                f"the deployment's name {context.instance_label!r} is not a Kubernetes label "
                "value (63 letters, digits, '-', '_' or '.' at most)"
            )
        quiet = logging.getLogger("httpx2")  # lightkube's client: a line per API call
        if quiet.level == logging.NOTSET:
            quiet.setLevel(logging.WARNING)
        self._options = options
        self._access = context.object_access
        self._namespace = options.namespace
        self._deployment = context.instance_label
        client = connect(options)
        self._api = NamespaceApi(client, options.namespace, options.request_timeout_seconds)
        # Notebooks are reached directly, never through a proxy the environment names.
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(2.0, connect=0.5), trust_env=False)
        self._pods = PodWatch(
            client, self._namespace, manifests.deployment_labels(self._deployment)
        )

    # --- start --------------------------------------------------------------------------

    async def start(self, spec: LaunchSpec) -> KubernetesHandle:
        began = time.monotonic()
        instance_id = spec.instance_id
        recipe = recipe_of(KubernetesRecipe, self.name, spec.profile)
        syncs = await self._bucket_syncs(spec)
        # A recipe that cannot make a pod fails the start before anything is created.
        self._api.model(Pod, self._pod_manifest(spec, recipe, Owner("PersistentVolumeClaim",
                                                                    "-", "-"), 0, syncs), "pod")
        self._pods.start()
        await self._stop(instance_id)
        owner: Owner | None = None
        if spec.storage.type == "evs":
            claim = await self._ensure_claim(spec)
            owner = Owner("PersistentVolumeClaim", name_of(claim), uid_of(claim))
        if syncs:
            await self._api.create_fresh(
                Secret,
                manifests.storage_secret(
                    instance_id=instance_id, namespace=self._namespace,
                    deployment=self._deployment, syncs=syncs, owner=owner,
                ),
                "create the object storage secret",
            )
        token = secrets.token_hex(16)
        await self._api.create_fresh(
            Secret,
            manifests.token_secret(
                instance_id=instance_id, namespace=self._namespace,
                deployment=self._deployment, token=token, owner=owner,
            ),
            "create the token secret",
        )
        launched_at = spec.now_ms + int((time.monotonic() - began) * 1000)
        manifest = self._pod_manifest(spec, recipe, owner, launched_at, syncs)
        created = await self._api.create(Pod, manifest, "create the pod")
        if created is None:
            raise TransientBackendError(
                f"the pod {manifest['metadata']['name']} still exists", TRANSIENT_RETRY
            )
        await self._api.create_fresh(
            Service,
            manifests.service(
                instance_id=instance_id, namespace=self._namespace,
                deployment=self._deployment, port=recipe.port,
                owner=Owner("Pod", name_of(created), uid_of(created)),
            ),
            "create the service",
        )
        return KubernetesHandle(
            pod=name_of(created), uid=uid_of(created), token=token,
            base_url=f"/notebooks/{instance_id}/", port=recipe.port, launched_at=launched_at,
        )

    async def _bucket_syncs(self, spec: LaunchSpec) -> list[BucketSync]:
        """The instance's buckets with the options (keys included) that reach them."""
        mounts = bucket_mounts(spec.storage, spec.extend_storage)
        if not mounts:
            return []
        if self._access is None:
            raise PermanentBackendError(
                "object storage (obs, obsfs) is not supported: this deployment has no "
                "S3 settings (DEMANAGER_S3__…)", "ModelArts.6324",
            )
        syncs = []
        for mount in mounts:
            try:
                found = await self._access.options_for(spec.project_id, mount.where.bucket)
            except ObjectStorageCredentialsMissing as exc:
                raise PermanentBackendError(exc.message, "ModelArts.6319") from None
            except ObjectStorageAccessError as exc:
                raise PermanentBackendError(exc.message, "ModelArts.6320") from None
            syncs.append(BucketSync(mount, found))
        return syncs

    def _pod_manifest(
        self, spec: LaunchSpec, recipe: KubernetesRecipe, owner: Owner | None,
        launched_at: int, syncs: list[BucketSync],
    ) -> dict[str, Any]:
        try:
            return manifests.pod(
                spec, recipe, self._options, deployment=self._deployment, owner=owner,
                launched_at=launched_at, syncs=syncs,
            )
        except ManifestError as exc:
            raise PermanentBackendError(f"profile {spec.profile.id!r}: {exc}") from exc

    async def _ensure_claim(self, spec: LaunchSpec) -> PersistentVolumeClaim:
        manifest = manifests.volume_claim(
            instance_id=spec.instance_id, namespace=self._namespace,
            deployment=self._deployment, size_gib=manifests.volume_size_gib(spec.storage),
            storage_class=self._options.storage_class,
        )
        claim = await self._api.create(PersistentVolumeClaim, manifest, "create the volume")
        if claim is None:  # it exists: the instance's volume, kept across stops
            claim = await self._api.get(PersistentVolumeClaim, manifest["metadata"]["name"])
        if claim is None:
            raise TransientBackendError("the volume vanished while it was created", 1.0)
        if claim.metadata is not None and claim.metadata.deletionTimestamp is not None:
            raise TransientBackendError("the volume is still being deleted", TRANSIENT_RETRY)
        return claim

    # --- observe ------------------------------------------------------------------------

    async def observe(
        self, instance_id: str, handle: KubernetesHandle | None
    ) -> Observation[KubernetesHandle]:
        pod = await self._pod_of(instance_id, handle)
        if pod is None:
            return Observation(Workload.ABSENT)
        if pods.gone(pod):
            # A pod whose buckets could not be synced ends before its notebook starts:
            # that fails the start with the reason, rather than looking merely absent.
            failure = pods.sync_failure(pod)
            if failure is not None and handle is not None:
                return Observation(Workload.BOOTING, handle.launched_at, failure=failure)
            return Observation(Workload.ABSENT)
        found = None
        if handle is None:
            found = await self._adopt(instance_id, pod)
        current = handle if handle is not None else found
        if current is None:
            return Observation(Workload.BOOTING, pods.launched_at(pod))
        booting: Observation[KubernetesHandle] = Observation(
            Workload.BOOTING, current.launched_at, found
        )
        failure = pods.launch_failure(pod)
        if failure is not None:
            return Observation(Workload.BOOTING, current.launched_at, found, failure=failure)
        if not pods.running(pod):
            return booting
        endpoint = self._endpoint(instance_id, pod, current)
        if endpoint is None or not await self._answers(endpoint):
            return booting
        return Observation(Workload.READY, current.launched_at, found, endpoint=endpoint)

    async def _pod_of(self, instance_id: str, handle: KubernetesHandle | None) -> Pod | None:
        """The instance's pod (the handle's, when given): from the watch's cache, or from
        the API server when the cache is not following it or has not seen the pod yet."""
        await self._pods.first_sync(self._options.request_timeout_seconds)
        if handle is None:
            if self._pods.synced:
                return self._pods.get(manifests.label_value(instance_id))
            labels = manifests.instance_labels(instance_id, self._deployment)
            return await self._api.first_pod(dict(labels))
        cached = self._pods.get(manifests.label_value(instance_id)) if self._pods.synced else None
        pod = cached if cached is not None and uid_of(cached) == handle.uid else None
        if pod is None:  # just created, or gone: ask
            pod = await self._api.get(Pod, handle.pod)
        return pod if pod is not None and uid_of(pod) == handle.uid else None

    async def _adopt(self, instance_id: str, pod: Pod) -> KubernetesHandle | None:
        """The handle of a pod this backend launched, rebuilt from the pod and its Secret."""
        token = pods.token_in_env(pod)
        if token is None:
            secret = await self._api.get(Secret, manifests.secret_name(instance_id))
            token = pods.secret_token(secret)
        if token is None:
            return None
        return KubernetesHandle(
            pod=name_of(pod), uid=uid_of(pod), token=token,
            base_url=f"/notebooks/{instance_id}/",
            port=pods.port_of(pod) or KubernetesRecipe().port,
            launched_at=pods.launched_at(pod),
        )

    def _endpoint(self, instance_id: str, pod: Pod, handle: KubernetesHandle) -> Endpoint | None:
        if self._options.address == "pod":
            host = pod.status.podIP if pod.status is not None else None
            if not host:
                return None
        else:
            host = manifests.service_host(
                instance_id, self._namespace, self._options.cluster_domain
            )
        return Endpoint(
            host=host, port=handle.port, base_path=handle.base_url,
            headers={"Authorization": f"token {handle.token}"},
        )

    async def _answers(self, endpoint: Endpoint) -> bool:
        return await jupyter.answers(self._http, endpoint)

    # --- stop and delete ----------------------------------------------------------------

    async def stop(self, instance_id: str, handle: KubernetesHandle | None) -> None:
        self._pods.start()
        await self._stop(instance_id)

    async def delete(
        self, instance_id: str, handle: KubernetesHandle | None, storage: Storage
    ) -> None:
        await self.stop(instance_id, handle)
        # In the foreground: in the background, a claim that a pod still uses waits for
        # the pod (pvc-protection) while the pod waits for its owner, the claim, to go.
        await self._api.delete(PersistentVolumeClaim, manifests.object_name(instance_id),
                               cascade=CascadeType.FOREGROUND)

    async def _stop(self, instance_id: str) -> None:
        """Delete the pod, its Service and its Secrets; wait for the pod to go."""
        name = manifests.object_name(instance_id)
        existed = await self._api.delete(Pod, name)
        await self._api.delete(Service, name)
        await self._api.delete(Secret, manifests.secret_name(instance_id))
        # Deleted at once: a terminating pod's containers keep the variables they were
        # started with, so the last upload needs the Secret no more.
        await self._api.delete(Secret, manifests.storage_secret_name(instance_id))
        if existed:
            await self._until_gone(instance_id, name)

    async def _until_gone(self, instance_id: str, name: str) -> None:
        # A pod with buckets gets the sync's grace on top; waiting that long for any pod
        # costs nothing, as one without ends sooner.
        grace = self._options.stop_timeout_seconds + self._options.sync_grace_seconds
        wait = grace + 2 * self._options.request_timeout_seconds
        deadline = time.monotonic() + wait
        delay = 0.05
        while await self._api.get(Pod, name) is not None:
            if time.monotonic() >= deadline:
                raise TransientBackendError(f"the pod {name} is still terminating", 1.0)
            await asyncio.sleep(delay)
            delay = min(delay * 1.6, GONE_POLL_CAP)
        # The next observe reads the watch's cache: let it catch up with the deletion.
        await self._pods.until_absent(manifests.label_value(instance_id), CACHE_GRACE_SECONDS)

    # --- doctor -------------------------------------------------------------------------

    async def check(self) -> list[str]:
        server = self._api.client.config.cluster.server
        try:
            version = await self._api.version()
        except (httpx2.HTTPError, ValueError) as exc:
            return [f"cannot reach the Kubernetes API server at {server}: {exc}"]
        log.info("Kubernetes API server %s, version %s", server, version)
        problems = []
        try:
            await self._api.read_namespace()
        except ApiError as exc:
            if exc.status.code == 404:
                problems.append(
                    f"the namespace {self._namespace!r} does not exist "
                    f"(kubectl create namespace {self._namespace})"
                )
            else:
                problems.append(f"cannot read the namespace {self._namespace!r}: {exc}")
        except httpx2.HTTPError as exc:
            return [*problems, f"cannot read the namespace {self._namespace!r}: {exc}"]
        for verb, resource in PERMISSIONS:
            try:
                allowed = await self._api.allowed(verb, resource)
            except httpx2.HTTPError as exc:
                problems.append(f"cannot ask whether it may {verb} {resource}: {exc}")
                continue
            if not allowed:
                problems.append(
                    f"missing permission: {verb} {resource} in namespace {self._namespace} "
                    "(deploy/kubernetes/rbac.yaml grants what the backend needs)"
                )
        return problems

    async def close(self) -> None:
        # The pods outlive the server on purpose: a restarted server adopts them.
        await self._pods.close()
        await self._api.client.close()
        await self._http.aclose()
