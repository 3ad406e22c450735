"""Which credentials serve a project's bucket, and whether the project may use it at all.

Two ways an operator gives a project object storage:

* **its own keys** (``demanager storage keys set PROJECT``): the store's own
  policy decides what they reach; demanager adds no rule of its own;
* **the deployment's keys** (``DEMANAGER_S3__ACCESS_KEY_ID``/``SECRET_ACCESS_KEY``),
  which can read every bucket of the account: a project may then use only the buckets
  granted to it (``demanager storage grant BUCKET PROJECT``), and a bucket is granted
  to one project at most, so that no project reaches another's data through them.

Pure: the caller looks the project's keys and the bucket's grant up and passes them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from pydantic import SecretStr

from demanager import errors
from demanager.objectstore.options import S3Options

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProjectKeys:
    """A project's own access key pair."""

    access_key_id: str
    secret_access_key: SecretStr

    def __repr__(self) -> str:  # never the secret, whatever logs it
        return f"ProjectKeys(access_key_id={self.access_key_id!r})"


@dataclass(frozen=True)
class BucketLookup:
    """What the store knows about one project and one bucket."""

    project_keys: ProjectKeys | None
    """The project's own keys, when an operator set them."""
    granted_to: str | None
    """The project the bucket is granted to, when it is granted."""


def options_for(
    deployment: S3Options, project_id: str, bucket: str, found: BucketLookup
) -> S3Options:
    """The S3 options (endpoint, region, keys) to reach ``bucket`` for ``project_id``.

    Raises 6319 when neither the project nor the deployment has keys, and 6320 when
    the deployment's keys serve another project's bucket or one granted to nobody."""
    if found.project_keys is not None:
        return deployment.model_copy(
            update={
                "access_key_id": found.project_keys.access_key_id,
                "secret_access_key": found.project_keys.secret_access_key,
            }
        )
    if not deployment.has_credentials:
        raise errors.ObjectStorageCredentialsMissing()
    if found.granted_to is None:
        raise errors.ObjectStorageAccessError(
            f"the bucket '{bucket}' is not granted to this project."
        )
    if found.granted_to != project_id:
        raise errors.ObjectStorageAccessError(
            f"the bucket '{bucket}' belongs to another project."
        )
    return deployment


class BucketDirectory(Protocol):
    """Where the project keys and bucket grants are kept (``store/objectaccess.py``)."""

    async def lookup(self, project_id: str, bucket: str) -> BucketLookup: ...


class ObjectAccess:
    """The deployment's S3 section and the operator's keys and grants together: the one
    place backends and the create check ask how to reach a project's bucket."""

    def __init__(self, deployment: S3Options, directory: BucketDirectory | None) -> None:
        self.deployment = deployment
        self._directory = directory

    async def options_for(self, project_id: str, bucket: str) -> S3Options:
        try:
            found = (
                await self._directory.lookup(project_id, bucket)
                if self._directory is not None
                else BucketLookup(project_keys=None, granted_to=None)
            )
        except errors.StorageKeysUnreadable as exc:
            # The operator's to mend (the server key changed); to the caller, the
            # project has no usable keys.
            log.error("%s", exc.message)
            raise errors.ObjectStorageCredentialsMissing() from exc
        return options_for(self.deployment, project_id, bucket, found)
