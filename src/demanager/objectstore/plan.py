"""What a sync must do, decided from two listings and the manifest of the last sync.

Pure functions: no I/O, no clock (the caller passes the stamp that names copies).

The manifest records, for every file the last sync left equal on both sides, the
object's ETag and the local file's size and mtime. That is what tells apart:

* a file the user deleted (in the manifest, gone locally) from one that never
  existed locally (not in the manifest): only the first is deleted in the bucket;
* a local change (size or mtime differ from the manifest) from a bucket change
  (the ETag differs from the manifest).

The conflict rule, when both sides changed the same file since the last sync:

* on the way down (start) the bucket's object wins the file's name, and the local
  file is kept beside it as ``{name}.local-{stamp}``;
* on the way up (periodically and at stop) the local file wins the key, and the
  bucket's object is first copied to ``{key}.bucket-{stamp}``.

Nothing is ever lost silently: the losing side is always kept as a copy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class RemoteEntry:
    etag: str
    size: int


@dataclass(frozen=True)
class LocalEntry:
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class SyncedEntry:
    """One file as the last sync left it, equal on both sides."""

    etag: str
    size: int
    mtime_ns: int

    def same_local(self, local: LocalEntry) -> bool:
        return self.size == local.size and self.mtime_ns == local.mtime_ns


Manifest = Mapping[str, SyncedEntry]


@dataclass(frozen=True)
class Download:
    path: str


@dataclass(frozen=True)
class Upload:
    path: str


@dataclass(frozen=True)
class DeleteLocal:
    path: str


@dataclass(frozen=True)
class DeleteRemote:
    path: str


@dataclass(frozen=True)
class KeepLocalCopy:
    """Rename the local file to ``copy`` before the bucket's version takes its name."""

    path: str
    copy: str


@dataclass(frozen=True)
class KeepRemoteCopy:
    """Copy the bucket's object to ``copy`` before the local file overwrites it."""

    path: str
    copy: str


@dataclass(frozen=True)
class Forget:
    """Drop a manifest entry whose file is gone on both sides."""

    path: str


Action = Download | Upload | DeleteLocal | DeleteRemote | KeepLocalCopy | KeepRemoteCopy | Forget


def plan_down(
    remote: Mapping[str, RemoteEntry],
    local: Mapping[str, LocalEntry],
    manifest: Manifest,
    stamp: str,
) -> list[Action]:
    """Bring the folder up to the bucket (at start): the bucket's changes win."""
    actions: list[Action] = []
    for path in sorted(remote):
        obj, here, synced = remote[path], local.get(path), manifest.get(path)
        if here is None:
            actions.append(Download(path))
        elif synced is None:
            # The same name on both sides with no common past: keep both.
            actions += [KeepLocalCopy(path, f"{path}.local-{stamp}"), Download(path)]
        elif synced.etag == obj.etag:
            continue  # the bucket did not change; a local change goes up later
        elif synced.same_local(here):
            actions.append(Download(path))
        else:
            actions += [KeepLocalCopy(path, f"{path}.local-{stamp}"), Download(path)]
    for path in sorted(set(manifest) - set(remote)):
        here = local.get(path)
        if here is None:
            actions.append(Forget(path))
        elif manifest[path].same_local(here):
            actions.append(DeleteLocal(path))  # deleted in the bucket, untouched here
        # else: changed here since; the upload keeps it
    return actions


def plan_up(
    remote: Mapping[str, RemoteEntry],
    local: Mapping[str, LocalEntry],
    manifest: Manifest,
    stamp: str,
) -> list[Action]:
    """Bring the bucket up to the folder (periodically and at stop): local changes win."""
    actions: list[Action] = []
    for path in sorted(local):
        here, obj, synced = local[path], remote.get(path), manifest.get(path)
        if synced is not None and synced.same_local(here):
            continue  # not changed here; a bucket change comes down at the next start
        bucket_changed = obj is not None and (synced is None or synced.etag != obj.etag)
        if bucket_changed:
            actions.append(KeepRemoteCopy(path, f"{path}.bucket-{stamp}"))
        actions.append(Upload(path))
    for path in sorted(set(manifest) - set(local)):
        obj = remote.get(path)
        if obj is None:
            actions.append(Forget(path))
        elif obj.etag == manifest[path].etag:
            actions.append(DeleteRemote(path))  # the user deleted it, and only they
        else:
            # Deleted here but rewritten in the bucket since: the newer object stays.
            actions.append(Forget(path))
    return actions
