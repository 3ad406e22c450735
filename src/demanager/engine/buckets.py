"""The create-time check of an instance's buckets: the project may use each one, and
the store lets its keys list the directory. A request that fails it creates nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from demanager.domain.instance import Storage
from demanager.objectstore.access import ObjectAccess
from demanager.objectstore.mounts import bucket_mounts
from demanager.objectstore.stores import StoreCache


class BucketCheck:
    def __init__(self, access: ObjectAccess) -> None:
        self._access = access
        self._stores = StoreCache()

    async def __call__(
        self, project_id: str, storage: Storage, extend_storage: Sequence[Storage] | None
    ) -> None:
        """Raise 6319 (no keys) or 6320 (not the project's, missing, or refused)."""
        for mount in bucket_mounts(storage, extend_storage or ()):
            options = await self._access.options_for(project_id, mount.where.bucket)
            store = self._stores.get(options)
            await asyncio.to_thread(store.check, mount.where.bucket, mount.where.prefix)
