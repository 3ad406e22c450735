"""What a pod says, read as the backend contract needs it: pure functions on the models.

Whether it is gone for good, whether its notebook container runs, why it can never
start (an image that cannot be pulled), when it was launched, and what a restarted
server needs to adopt it (its port, its token).
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Any

from lightkube.resources.core_v1 import Pod, Secret

from demanager.backends.kubernetes import manifests
from demanager.domain.instance import FailedReason

IMAGE_FAILURES = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName",
                            "ErrImageNeverPull"})
CONFIG_FAILURES = frozenset({"CreateContainerConfigError"})


def gone(pod: Pod) -> bool:
    """Terminating, or ended: restartPolicy Never means an ended pod never comes back."""
    if pod.metadata is not None and pod.metadata.deletionTimestamp is not None:
        return True
    return pod.status is not None and pod.status.phase in ("Failed", "Succeeded")


def running(pod: Pod) -> bool:
    """Running, with the notebook's container started."""
    status = pod.status
    if status is None or status.phase != "Running":
        return False
    return any(
        s.name == manifests.CONTAINER and s.state is not None and s.state.running is not None
        for s in status.containerStatuses or []
    )


def sync_failure(pod: Pod) -> FailedReason | None:
    """Why the buckets could not be brought into the pod: the ``sync-down`` init
    container's last line (the agent's one-line reason, which names no key)."""
    status = pod.status
    for container in (status.initContainerStatuses or []) if status is not None else []:
        ended = container.state.terminated if container.state is not None else None
        if container.name != manifests.SYNC_DOWN or ended is None or ended.exitCode == 0:
            continue
        lines = [line for line in (ended.message or "").splitlines() if line.strip()]
        said = lines[-1] if lines else f"exit status {ended.exitCode}"
        return FailedReason("ModelArts.6320",
                            f"the files could not be synced from object storage: {said}",
                            {"reason": "SyncFailed"})
    return None


def launch_failure(pod: Pod) -> FailedReason | None:
    """Why the pod can never start as launched: its image (or the sync containers')
    cannot be pulled, its container cannot be made, or its buckets cannot be synced.
    The kubelet would retry forever; the start fails now."""
    status = pod.status
    if status is None:
        return None
    synced = sync_failure(pod)
    if synced is not None or status.phase != "Pending":
        return synced
    for container in [*(status.initContainerStatuses or []), *(status.containerStatuses or [])]:
        waiting = container.state.waiting if container.state is not None else None
        if waiting is None:
            continue
        said = waiting.message or waiting.reason or "no reason given"
        if waiting.reason in IMAGE_FAILURES:
            image = container.image or image_of(pod)
            return FailedReason("ModelArts.6361", f"image {image} cannot be pulled: {said}",
                                {"reason": waiting.reason})
        if waiting.reason in CONFIG_FAILURES:
            return FailedReason("ModelArts.6361",
                                f"the notebook's container cannot be created: {said}",
                                {"reason": waiting.reason})
    return None


def notebook_container(pod: Pod) -> Any:
    containers = pod.spec.containers if pod.spec is not None else []
    return next((c for c in containers if c.name == manifests.CONTAINER), None)


def image_of(pod: Pod) -> str:
    container = notebook_container(pod)
    return str(container.image) if container is not None else "?"


def port_of(pod: Pod) -> int | None:
    container = notebook_container(pod)
    ports = (container.ports or []) if container is not None else []
    return int(ports[0].containerPort) if ports else None


def token_in_env(pod: Pod) -> str | None:
    """A token given to the notebook as a plain value (none of this backend's pods)."""
    container = notebook_container(pod)
    for entry in (container.env or []) if container is not None else []:
        if entry.name == manifests.TOKEN_ENV and entry.value:
            return str(entry.value)
    return None


def secret_token(secret: Secret | None) -> str | None:
    if secret is None or not secret.data or manifests.TOKEN_KEY not in secret.data:
        return None
    try:
        return base64.b64decode(secret.data[manifests.TOKEN_KEY]).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None


def launched_at(pod: Pod) -> int | None:
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
