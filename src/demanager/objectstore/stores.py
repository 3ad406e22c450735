"""One S3 client per endpoint and key pair, made on first use.

boto3 is imported only then: a server whose instances use no object storage never
loads it (about 10 MiB of the control plane's memory).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from demanager.objectstore.options import S3Options

if TYPE_CHECKING:
    from demanager.objectstore.client import ObjectStore


class StoreCache:
    """One client per endpoint and key pair: a boto3 client is thread-safe and slow to
    make. Keyed by a digest of the secret too, so that changed keys (a project's own,
    set again) are used at once and a wrong secret never borrows a right one's client."""

    def __init__(self) -> None:
        self._stores: dict[tuple[str | None, str, str | None, str], ObjectStore] = {}

    def get(self, options: S3Options) -> ObjectStore:
        secret = options.secret_access_key
        digest = hashlib.sha256(secret.get_secret_value().encode()).hexdigest() if secret else ""
        key = (options.endpoint_url, options.region, options.access_key_id, digest)
        store = self._stores.get(key)
        if store is None:
            from demanager.objectstore.client import ObjectStore

            store = self._stores[key] = ObjectStore(options)
        return store
