"""The Kubernetes backend: each instance is a Pod, a PersistentVolumeClaim and a Service.

``manifests.py`` builds the objects; this module creates, reads and deletes them
with lightkube's AsyncClient, and ``watcher.py`` keeps one watch of the deployment's
pods that ``observe`` answers from. Every replica of demanager reaches the cluster,
so ``node`` is None: whichever replica holds an instance's lease drives it.

* ``start`` deletes any pod of the instance and waits for it to go, makes sure the
  volume claim exists, writes a fresh token Secret, creates the pod and its Service.
* ``observe`` reads the pod from the watch's cache; when it runs, it asks Jupyter's
  ``/api/status`` with the token through the endpoint the proxy will use. A pod that
  cannot pull its image fails the start at once (``Observation.failure``). Given no
  handle it rebuilds one from the pod and its Secret (adoption after a crash).
* ``stop`` deletes the pod, the Service and the Secret, and waits for the pod to go;
  ``delete`` also deletes the claim, which owns whatever might be left.

API errors: 5xx, 429, timeouts and connection failures are transient; a 4xx answer to
a create is permanent, with the API server's message. Deleting what is gone is fine.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import secrets
import time
from collections.abc import Awaitable
from datetime import datetime
from typing import Any, TypeVar, cast

import httpx
import httpx2
from lightkube import ApiError, AsyncClient, KubeConfig
from lightkube.config.client_adapter import AsyncClient as adapter_client
from lightkube.config.client_adapter import ConnectionParams
from lightkube.config.models import Cluster, User
from lightkube.core.resource import NamespacedResource
from lightkube.models.authorization_v1 import ResourceAttributes, SelfSubjectAccessReviewSpec
from lightkube.resources.authorization_v1 import SelfSubjectAccessReview
from lightkube.resources.core_v1 import (
    Namespace,
    PersistentVolumeClaim,
    Pod,
    Secret,
    Service,
)
from lightkube.types import CascadeType

from demanager.backends.base import BackendContext, Handle, LaunchSpec, recipe_of
from demanager.backends.kubernetes import manifests
from demanager.backends.kubernetes.manifests import ManifestError, Owner
from demanager.backends.kubernetes.watcher import PodWatch
from demanager.backends.options import KubernetesOptions, KubernetesRecipe
from demanager.domain.instance import Endpoint, FailedReason, Storage
from demanager.domain.planning import Observation, Workload
from demanager.errors import BackendError, PermanentBackendError, TransientBackendError

log = logging.getLogger(__name__)

R = TypeVar("R")
N = TypeVar("N", bound=NamespacedResource)

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

IMAGE_FAILURES = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName",
                            "ErrImageNeverPull"})
CONFIG_FAILURES = frozenset({"CreateContainerConfigError"})
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
        self._namespace = options.namespace
        self._deployment = context.instance_label
        self._client = AsyncClient(
            config=_config(options),
            namespace=options.namespace,
            timeout=httpx2.Timeout(options.request_timeout_seconds),
            field_manager="demanager",
        )
        # Notebooks are reached directly, never through a proxy the environment names.
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(2.0, connect=0.5), trust_env=False)
        self._pods = PodWatch(
            self._client, self._namespace, manifests.deployment_labels(self._deployment)
        )

    # --- start --------------------------------------------------------------------------

    async def start(self, spec: LaunchSpec) -> KubernetesHandle:
        began = time.monotonic()
        instance_id = spec.instance_id
        recipe = recipe_of(KubernetesRecipe, self.name, spec.profile)
        if spec.storage.type != "evs" or spec.extend_storage:
            raise PermanentBackendError(
                "the kubernetes backend keeps a notebook's files on its EVS volume only; "
                "object storage (obs, obsfs) is not supported", "ModelArts.6324",
            )
        # A recipe that cannot make a pod fails the start before anything is created.
        self._object(Pod, self._pod_manifest(spec, recipe, Owner("PersistentVolumeClaim",
                                                                 "-", "-"), 0), "pod")
        self._pods.start()
        await self._stop(instance_id)
        claim = await self._ensure_claim(spec)
        owner = Owner("PersistentVolumeClaim", _name(claim), _uid(claim))
        token = secrets.token_hex(16)
        await self._create_fresh(
            Secret,
            manifests.token_secret(
                instance_id=instance_id, namespace=self._namespace,
                deployment=self._deployment, token=token, owner=owner,
            ),
            "create the token secret",
        )
        launched_at = spec.now_ms + int((time.monotonic() - began) * 1000)
        manifest = self._pod_manifest(spec, recipe, owner, launched_at)
        created = await self._create(Pod, manifest, "create the pod")
        if created is None:
            raise TransientBackendError(
                f"the pod {manifest['metadata']['name']} still exists", TRANSIENT_RETRY
            )
        await self._create_fresh(
            Service,
            manifests.service(
                instance_id=instance_id, namespace=self._namespace,
                deployment=self._deployment, port=recipe.port,
                owner=Owner("Pod", _name(created), _uid(created)),
            ),
            "create the service",
        )
        return KubernetesHandle(
            pod=_name(created), uid=_uid(created), token=token,
            base_url=f"/notebooks/{instance_id}/", port=recipe.port, launched_at=launched_at,
        )

    def _pod_manifest(
        self, spec: LaunchSpec, recipe: KubernetesRecipe, owner: Owner, launched_at: int
    ) -> dict[str, Any]:
        try:
            return manifests.pod(
                spec, recipe, self._options, deployment=self._deployment, owner=owner,
                launched_at=launched_at,
            )
        except ManifestError as exc:
            raise PermanentBackendError(f"profile {spec.profile.id!r}: {exc}") from exc

    async def _ensure_claim(self, spec: LaunchSpec) -> PersistentVolumeClaim:
        manifest = manifests.volume_claim(
            instance_id=spec.instance_id, namespace=self._namespace,
            deployment=self._deployment, size_gib=manifests.volume_size_gib(spec.storage),
            storage_class=self._options.storage_class,
        )
        claim = await self._create(PersistentVolumeClaim, manifest, "create the volume")
        if claim is None:  # it exists: the instance's volume, kept across stops
            claim = await self._get(PersistentVolumeClaim, manifest["metadata"]["name"])
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
        if pod is None or _gone(pod):
            return Observation(Workload.ABSENT)
        found = None
        if handle is None:
            found = await self._adopt(instance_id, pod)
        current = handle if handle is not None else found
        if current is None:
            return Observation(Workload.BOOTING, _launched_at(pod))
        booting: Observation[KubernetesHandle] = Observation(
            Workload.BOOTING, current.launched_at, found
        )
        failure = _launch_failure(pod)
        if failure is not None:
            return Observation(Workload.BOOTING, current.launched_at, found, failure=failure)
        if not _running(pod):
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
            return await self._find(instance_id)
        cached = self._pods.get(manifests.label_value(instance_id)) if self._pods.synced else None
        pod = cached if cached is not None and _uid(cached) == handle.uid else None
        if pod is None:  # just created, or gone: ask
            pod = await self._get(Pod, handle.pod)
        return pod if pod is not None and _uid(pod) == handle.uid else None

    async def _find(self, instance_id: str) -> Pod | None:
        labels: dict[str, Any] = manifests.instance_labels(instance_id, self._deployment)

        async def first() -> Pod | None:
            async for pod in self._client.list(Pod, namespace=self._namespace, labels=labels):
                return pod
            return None

        return await self._api("list the instance's pods", first())

    async def _adopt(self, instance_id: str, pod: Pod) -> KubernetesHandle | None:
        """The handle of a pod this backend launched, rebuilt from the pod and its Secret."""
        container = _notebook_container(pod)
        if container is None:
            return None
        token = next(
            (e.value for e in container.env or [] if e.name == manifests.TOKEN_ENV and e.value),
            None,
        )
        if token is None:
            secret = await self._get(Secret, manifests.secret_name(instance_id))
            token = _secret_token(secret)
        if token is None:
            return None
        ports = container.ports or []
        return KubernetesHandle(
            pod=_name(pod), uid=_uid(pod), token=token, base_url=f"/notebooks/{instance_id}/",
            port=ports[0].containerPort if ports else KubernetesRecipe().port,
            launched_at=_launched_at(pod),
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
        host = f"[{endpoint.host}]" if ":" in endpoint.host else endpoint.host
        try:
            response = await self._http.get(
                f"http://{host}:{endpoint.port}{endpoint.base_path}api/status",
                headers=dict(endpoint.headers),
            )
        except httpx.HTTPError:
            return False
        return response.status_code == 200

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
        await self._delete(PersistentVolumeClaim, manifests.object_name(instance_id), "volume",
                           cascade=CascadeType.FOREGROUND)

    async def _stop(self, instance_id: str) -> None:
        """Delete the pod, its Service and its Secret; wait for the pod to go."""
        name = manifests.object_name(instance_id)
        existed = await self._delete(Pod, name, "pod")
        await self._delete(Service, name, "service")
        await self._delete(Secret, manifests.secret_name(instance_id), "token secret")
        if existed:
            await self._until_gone(instance_id, name)

    async def _until_gone(self, instance_id: str, name: str) -> None:
        wait = self._options.stop_timeout_seconds + 2 * self._options.request_timeout_seconds
        deadline = time.monotonic() + wait
        delay = 0.05
        while await self._get(Pod, name) is not None:
            if time.monotonic() >= deadline:
                raise TransientBackendError(f"the pod {name} is still terminating", 1.0)
            await asyncio.sleep(delay)
            delay = min(delay * 1.6, GONE_POLL_CAP)
        # The next observe reads the watch's cache: let it catch up with the deletion.
        await self._pods.until_absent(manifests.label_value(instance_id), CACHE_GRACE_SECONDS)

    # --- doctor -------------------------------------------------------------------------

    async def check(self) -> list[str]:
        server = self._client.config.cluster.server
        try:
            version = await self._version()
        except (httpx2.HTTPError, ValueError) as exc:
            return [f"cannot reach the Kubernetes API server at {server}: {exc}"]
        log.info("Kubernetes API server %s, version %s", server, version)
        problems = []
        try:
            await self._client.get(Namespace, self._namespace)
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
                allowed = await self._allowed(verb, resource)
            except httpx2.HTTPError as exc:
                problems.append(f"cannot ask whether it may {verb} {resource}: {exc}")
                continue
            if not allowed:
                problems.append(
                    f"missing permission: {verb} {resource} in namespace {self._namespace} "
                    "(deploy/kubernetes/rbac.yaml grants what the backend needs)"
                )
        return problems

    async def _version(self) -> str:
        params = ConnectionParams(timeout=httpx2.Timeout(self._options.request_timeout_seconds))
        async with adapter_client(self._client.config, params) as http:
            response = await http.get("/version")
            response.raise_for_status()
            body = response.json()
        return str(body.get("gitVersion", "?")) if isinstance(body, dict) else "?"

    async def _allowed(self, verb: str, resource: str) -> bool:
        review = SelfSubjectAccessReview(
            spec=SelfSubjectAccessReviewSpec(
                resourceAttributes=ResourceAttributes(
                    namespace=self._namespace, verb=verb, resource=resource, group=""
                )
            )
        )
        answer = await self._client.create(review)
        return bool(answer.status is not None and answer.status.allowed)

    async def close(self) -> None:
        # The pods outlive the server on purpose: a restarted server adopts them.
        await self._pods.close()
        await self._client.close()
        await self._http.aclose()

    # --- API calls, with their errors translated ----------------------------------------

    async def _api(self, what: str, call: Awaitable[R], *, creating: bool = False) -> R:
        try:
            return await call
        except ApiError as exc:
            raise _translate(exc, what, creating=creating) from exc
        except httpx2.HTTPError as exc:
            raise TransientBackendError(
                f"cannot {what}: {exc or type(exc).__name__}", TRANSIENT_RETRY
            ) from exc

    async def _get(self, kind: type[N], name: str) -> N | None:
        try:
            return await self._client.get(kind, name, namespace=self._namespace)
        except ApiError as exc:
            if exc.status.code == 404:
                return None
            raise _translate(exc, f"read {kind.__name__} {name}") from exc
        except httpx2.HTTPError as exc:
            raise TransientBackendError(
                f"cannot read {kind.__name__} {name}: {exc or type(exc).__name__}",
                TRANSIENT_RETRY,
            ) from exc

    async def _create(self, kind: type[N], manifest: dict[str, Any], what: str) -> N | None:
        """The created object, or None when one of that name exists (409)."""
        obj = self._object(kind, manifest, what)
        try:
            return await self._api(what, self._client.create(obj), creating=True)
        except TransientBackendError as exc:
            cause = exc.__cause__
            if isinstance(cause, ApiError) and cause.status.code == 409:
                return None
            raise

    @staticmethod
    def _object(kind: type[N], manifest: dict[str, Any], what: str) -> N:
        """The manifest as lightkube's model, which checks the fields' types."""
        try:
            obj: N = cast(Any, kind).from_dict(manifest)
        except Exception as exc:  # msgspec's ValidationError, raised on a wrong field type
            raise PermanentBackendError(f"cannot {what}: the manifest is invalid: {exc}") from exc
        return obj

    async def _create_fresh(self, kind: type[N], manifest: dict[str, Any], what: str) -> N:
        """Create the object, replacing one of that name left by an earlier launch."""
        name = manifest["metadata"]["name"]
        for _ in range(2):
            created = await self._create(kind, manifest, what)
            if created is not None:
                return created
            await self._delete(kind, name, kind.__name__)
        raise TransientBackendError(f"cannot {what}: {name} keeps existing", TRANSIENT_RETRY)

    async def _delete(
        self, kind: type[NamespacedResource], name: str, what: str,
        cascade: CascadeType = CascadeType.BACKGROUND,
    ) -> bool:
        """Delete; True if it existed. The garbage collector removes what it owned."""
        try:
            await self._client.delete(kind, name, namespace=self._namespace, cascade=cascade)
        except ApiError as exc:
            if exc.status.code == 404:
                return False
            raise _translate(exc, f"delete the {what} {name}") from exc
        except httpx2.HTTPError as exc:
            raise TransientBackendError(
                f"cannot delete the {what} {name}: {exc or type(exc).__name__}", TRANSIENT_RETRY
            ) from exc
        return True


# --- helpers ----------------------------------------------------------------------------


def _config(options: KubernetesOptions) -> KubeConfig:
    if options.server:
        # KubeConfig.from_server leaves the user out, which lightkube 1.0's client then
        # refuses ("Missing user"): an anonymous user is what a bare URL means.
        return KubeConfig.from_one(
            cluster=Cluster(server=options.server), user=User(), namespace=options.namespace
        )
    try:
        return KubeConfig.from_env()
    except Exception as exc:
        raise ValueError(
            "no Kubernetes configuration: run demanager in the cluster with a service "
            "account, set KUBECONFIG, or set DEMANAGER_KUBERNETES__SERVER "
            f"({exc})"
        ) from exc


def _translate(exc: ApiError, what: str, *, creating: bool = False) -> BackendError:
    code = exc.status.code or 0
    message = exc.status.message or str(exc)
    if creating and 400 <= code < 500 and code not in (408, 409, 429):
        return PermanentBackendError(f"Kubernetes refused to {what}: {message}")
    return TransientBackendError(f"cannot {what} ({code}): {message}", TRANSIENT_RETRY)


def _name(obj: Any) -> str:
    return str(obj.metadata.name)


def _uid(obj: Any) -> str:
    return str(obj.metadata.uid)


def _gone(pod: Pod) -> bool:
    """Terminating, or ended: restartPolicy Never means an ended pod never comes back."""
    if pod.metadata is not None and pod.metadata.deletionTimestamp is not None:
        return True
    return pod.status is not None and pod.status.phase in ("Failed", "Succeeded")


def _running(pod: Pod) -> bool:
    status = pod.status
    if status is None or status.phase != "Running":
        return False
    return any(
        s.name == manifests.CONTAINER and s.state is not None and s.state.running is not None
        for s in status.containerStatuses or []
    )


def _launch_failure(pod: Pod) -> FailedReason | None:
    """Why the pod can never start as launched: its image cannot be pulled, or its
    container cannot be made. The kubelet would retry forever; the start fails now."""
    status = pod.status
    if status is None or status.phase != "Pending":
        return None
    for container in status.containerStatuses or []:
        waiting = container.state.waiting if container.state is not None else None
        if waiting is None:
            continue
        said = waiting.message or waiting.reason or "no reason given"
        if waiting.reason in IMAGE_FAILURES:
            image = container.image or _image_of(pod)
            return FailedReason("ModelArts.6361", f"image {image} cannot be pulled: {said}",
                                {"reason": waiting.reason})
        if waiting.reason in CONFIG_FAILURES:
            return FailedReason("ModelArts.6361",
                                f"the notebook's container cannot be created: {said}",
                                {"reason": waiting.reason})
    return None


def _notebook_container(pod: Pod) -> Any:
    containers = pod.spec.containers if pod.spec is not None else []
    return next((c for c in containers if c.name == manifests.CONTAINER), None)


def _image_of(pod: Pod) -> str:
    container = _notebook_container(pod)
    return str(container.image) if container is not None else "?"


def _secret_token(secret: Secret | None) -> str | None:
    if secret is None or not secret.data or manifests.TOKEN_KEY not in secret.data:
        return None
    try:
        return base64.b64decode(secret.data[manifests.TOKEN_KEY]).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None


def _launched_at(pod: Pod) -> int | None:
    """When the pod was launched, in ms: its annotation, else its creation time."""
    meta = pod.metadata
    if meta is None:
        return None
    stamp = (meta.annotations or {}).get(manifests.LAUNCHED_AT)
    if stamp is not None and stamp.isdigit():
        return int(stamp)
    created = meta.creationTimestamp
    if isinstance(created, datetime):
        return int(created.timestamp() * 1000)
    return None
