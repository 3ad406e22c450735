"""The buckets an instance works with, from its storage: what is mounted where, and how.

* ``obs``: the bucket directory (``/bucket/dir/``) is the working directory, read-write;
* ``obsfs``: the whole parallel file system (a bucket) at ``mount_path``, read-only for
  ``ReadOnlyMany``, read-write for ``ReadWriteMany``; as the primary storage or in
  ``extend_storage``.

Every backend that moves object storage (a synced folder on the host, a sync container
in a pod) starts from this list, so the three kinds mean the same everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from demanager.domain.instance import WORK_DIR, Storage
from demanager.objectstore.paths import BucketPath, parse_obs_path

READ_ONLY = "ReadOnlyMany"


@dataclass(frozen=True)
class BucketMount:
    name: str
    """Stable and safe as a file or container-volume name: ``work`` for the working
    directory, ``mount-{n}`` for the n-th ``extend_storage`` element."""
    where: BucketPath
    mount_path: str
    """Where the notebook sees it (``WORK_DIR`` for the working directory)."""
    read_only: bool

    @property
    def is_work_dir(self) -> bool:
        return self.mount_path == WORK_DIR


def _mount(name: str, storage: Storage) -> BucketMount:
    location = storage.location
    if storage.type == "obs":
        assert location.path is not None  # validated at create
        return BucketMount(name, parse_obs_path(location.path), WORK_DIR, read_only=False)
    assert location.path is not None
    return BucketMount(
        name,
        BucketPath(location.path.strip("/"), ""),
        location.mount_path or WORK_DIR,
        read_only=location.access_modes == READ_ONLY,
    )


def bucket_mounts(storage: Storage, extend_storage: Sequence[Storage]) -> list[BucketMount]:
    """The instance's buckets, the working directory's first (when it is one)."""
    mounts = []
    if storage.type in ("obs", "obsfs"):
        mounts.append(_mount("work", storage))
    for n, extra in enumerate(extend_storage):
        mounts.append(_mount(f"mount-{n}", extra))
    return mounts
