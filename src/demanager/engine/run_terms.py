"""The terms a run starts under, applied when an instance enters RUNNING: when it must
stop (auto-stop, §4.4, and a free flavor's forced duration), and the EVS size check."""

from __future__ import annotations

from demanager.domain.catalog import Catalog
from demanager.domain.instance import FailedReason, Instance

GB = 1024**3


def stop_deadline(instance: Instance, catalog: Catalog, running_since_ms: int) -> int | None:
    """When the run that starts at ``running_since_ms`` must stop, if ever.

    The user's countdown and a free flavor's forced ``duration`` both count;
    whichever comes first wins.
    """
    candidates = []
    if instance.auto_stop.enable and instance.auto_stop.duration:
        candidates.append(running_since_ms + instance.auto_stop.duration * 1000)
    flavor = catalog.flavors.get(instance.flavor)
    if flavor is not None and flavor.duration:
        candidates.append(running_since_ms + flavor.duration * 1000)
    return min(candidates) if candidates else None


def volume_overuse(instance: Instance, used: int | None) -> FailedReason | None:
    """A warning when the volume holds more than its requested size.

    Not every backend can enforce a size (a folder, a local Docker volume), so the
    backend measures the volume and the instance reports the excess in
    ``failed_reasons`` while it runs, rather than refusing to start and locking the
    user out of their own files.
    """
    size_gb = instance.storage.location.volume_size
    if instance.storage.type != "evs" or not size_gb or used is None:
        return None
    if used <= size_gb * GB:
        return None
    return FailedReason(
        code="ModelArts.6528",
        message=f"The volume holds {used / GB:.1f} GB, more than its size of {size_gb} GB; "
        "free some space.",
        detail={"used_bytes": str(used), "volume_size_gb": str(size_gb)},
    )
