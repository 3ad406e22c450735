"""The backend's calls to the API server, in one namespace, with their errors translated.

Every call answers with an object, or raises the backend contract's errors: 5xx, 429,
time-outs and refused connections are ``TransientBackendError``; a 4xx answer to a
create is ``PermanentBackendError`` with the API server's message (an invalid object,
a quota, a forbidden field); a 404 on a read is None and on a delete is success; a 409
on a create is None, for the caller to decide.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar, cast

import httpx2
from lightkube import ApiError, AsyncClient, KubeConfig
from lightkube.config.client_adapter import AsyncClient as adapter_client
from lightkube.config.client_adapter import ConnectionParams
from lightkube.config.models import Cluster, User
from lightkube.core.resource import NamespacedResource
from lightkube.models.authorization_v1 import ResourceAttributes, SelfSubjectAccessReviewSpec
from lightkube.resources.authorization_v1 import SelfSubjectAccessReview
from lightkube.resources.core_v1 import Namespace, Pod
from lightkube.types import CascadeType

from demanager.backends.options import KubernetesOptions
from demanager.errors import BackendError, PermanentBackendError, TransientBackendError

R = TypeVar("R")
N = TypeVar("N", bound=NamespacedResource)

RETRY_SECONDS = 2.0


def connect(options: KubernetesOptions) -> AsyncClient:
    """lightkube's client for the configured API server."""
    return AsyncClient(
        config=_config(options),
        namespace=options.namespace,
        timeout=httpx2.Timeout(options.request_timeout_seconds),
        field_manager="demanager",
    )


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
            f"account, set KUBECONFIG, or set DEMANAGER_KUBERNETES__SERVER ({exc})"
        ) from exc


def translate(exc: ApiError, what: str, *, creating: bool = False) -> BackendError:
    code = exc.status.code or 0
    message = exc.status.message or str(exc)
    if creating and 400 <= code < 500 and code not in (408, 409, 429):
        return PermanentBackendError(f"Kubernetes refused to {what}: {message}")
    return TransientBackendError(f"cannot {what} ({code}): {message}", RETRY_SECONDS)


def _unreachable(what: str, exc: httpx2.HTTPError) -> TransientBackendError:
    return TransientBackendError(f"cannot {what}: {exc or type(exc).__name__}", RETRY_SECONDS)


def name_of(obj: Any) -> str:
    return str(obj.metadata.name)


def uid_of(obj: Any) -> str:
    return str(obj.metadata.uid)


class NamespaceApi:
    def __init__(self, client: AsyncClient, namespace: str, timeout: float) -> None:
        self.client = client
        self.namespace = namespace
        self._timeout = timeout

    async def call(self, what: str, call: Awaitable[R], *, creating: bool = False) -> R:
        try:
            return await call
        except ApiError as exc:
            raise translate(exc, what, creating=creating) from exc
        except httpx2.HTTPError as exc:
            raise _unreachable(what, exc) from exc

    async def get(self, kind: type[N], name: str) -> N | None:
        """The object, or None when there is none of that name."""
        what = f"read the {kind.__name__} {name}"
        try:
            return await self.client.get(kind, name, namespace=self.namespace)
        except ApiError as exc:
            if exc.status.code == 404:
                return None
            raise translate(exc, what) from exc
        except httpx2.HTTPError as exc:
            raise _unreachable(what, exc) from exc

    async def first_pod(self, labels: dict[str, Any]) -> Pod | None:
        """A pod with ``labels``, or None."""

        async def first() -> Pod | None:
            async for pod in self.client.list(Pod, namespace=self.namespace, labels=labels):
                return pod
            return None

        return await self.call("list pods", first())

    @staticmethod
    def model(kind: type[N], manifest: dict[str, Any], what: str) -> N:
        """The manifest as lightkube's model, which checks the fields' types."""
        try:
            obj: N = cast(Any, kind).from_dict(manifest)
        except Exception as exc:  # msgspec's ValidationError, raised on a wrong field type
            raise PermanentBackendError(f"cannot {what}: the manifest is invalid: {exc}") from exc
        return obj

    async def create(self, kind: type[N], manifest: dict[str, Any], what: str) -> N | None:
        """The created object, or None when one of that name exists (409)."""
        obj = self.model(kind, manifest, what)
        try:
            return await self.call(what, self.client.create(obj), creating=True)
        except TransientBackendError as exc:
            cause = exc.__cause__
            if isinstance(cause, ApiError) and cause.status.code == 409:
                return None
            raise

    async def create_fresh(self, kind: type[N], manifest: dict[str, Any], what: str) -> N:
        """Create the object, replacing one of that name left by an earlier launch."""
        name = manifest["metadata"]["name"]
        for _ in range(2):
            created = await self.create(kind, manifest, what)
            if created is not None:
                return created
            await self.delete(kind, name)
        raise TransientBackendError(f"cannot {what}: {name} keeps existing", RETRY_SECONDS)

    async def delete(
        self, kind: type[NamespacedResource], name: str,
        cascade: CascadeType = CascadeType.BACKGROUND,
    ) -> bool:
        """Delete; True if it existed. The garbage collector removes what it owned."""
        what = f"delete the {kind.__name__} {name}"
        try:
            await self.client.delete(kind, name, namespace=self.namespace, cascade=cascade)
        except ApiError as exc:
            if exc.status.code == 404:
                return False
            raise translate(exc, what) from exc
        except httpx2.HTTPError as exc:
            raise _unreachable(what, exc) from exc
        return True

    # --- for doctor: these raise lightkube's and httpx2's errors as they come ----------

    async def version(self) -> str:
        """The API server's ``/version`` (a path lightkube has no call for)."""
        params = ConnectionParams(timeout=httpx2.Timeout(self._timeout))
        async with adapter_client(self.client.config, params) as http:
            response = await http.get("/version")
            response.raise_for_status()
            body = response.json()
        return str(body.get("gitVersion", "?")) if isinstance(body, dict) else "?"

    async def read_namespace(self) -> None:
        await self.client.get(Namespace, self.namespace)

    async def allowed(self, verb: str, resource: str) -> bool:
        """Whether this identity may ``verb`` core ``resource`` in the namespace."""
        review = SelfSubjectAccessReview(
            spec=SelfSubjectAccessReviewSpec(
                resourceAttributes=ResourceAttributes(
                    namespace=self.namespace, verb=verb, resource=resource, group=""
                )
            )
        )
        answer = await self.client.create(review)
        return bool(answer.status is not None and answer.status.allowed)
