"""Who is calling: ``X-Auth-Token`` to a principal bound to the path's project (§1.3).

The rules themselves live in ``demanager.identity``; this is only the header's name.
"""

from __future__ import annotations

HEADER = "X-Auth-Token"
