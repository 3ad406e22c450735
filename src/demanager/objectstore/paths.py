"""Bucket paths and object keys, checked so that no key can name a file outside its folder."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from demanager import errors


@dataclass(frozen=True)
class BucketPath:
    bucket: str
    prefix: str
    """The directory inside the bucket, ending with ``/`` (never empty: a bucket root
    is refused, as the contract's 6358 says)."""


def parse_obs_path(path: str) -> BucketPath:
    """``/bucket/dir/`` or ``obs://bucket/dir/`` as a bucket and a key prefix."""
    inner = path[len("obs://") :] if path.startswith("obs://") else path
    segments = inner.strip("/").split("/")
    if any(s in ("..", ".") for s in segments):
        raise errors.InvalidValue("location.path", "'.' and '..' are not allowed.")
    if not segments[0] or any(not s for s in segments):
        raise errors.InvalidValue("location.path", "Empty path segment.")
    if len(segments) == 1:
        raise errors.PathIsBucketRoot()
    return BucketPath(segments[0], "/".join(segments[1:]) + "/")


def relative_key(prefix: str, key: str) -> str | None:
    """The file a key stands for under ``prefix``, as a relative POSIX path; None for a
    key no file can be made of safely (a folder marker, ``..``, an absolute or empty name)."""
    if not key.startswith(prefix) or key.endswith("/"):
        return None
    rel = key[len(prefix) :]
    parts = rel.split("/")
    if not rel or any(p in ("", ".", "..") for p in parts) or "\x00" in rel:
        return None
    if posixpath.normpath(rel) != rel:
        return None
    return rel
