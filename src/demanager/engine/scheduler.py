"""Auto-stop arithmetic (contract §4.4)."""

from __future__ import annotations

from demanager.domain.catalog import Catalog
from demanager.domain.instance import Instance


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
