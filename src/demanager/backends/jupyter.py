"""What every backend asks of the Jupyter server it launched: does it answer?"""

from __future__ import annotations

import httpx

from demanager.domain.instance import Endpoint


async def answers(http: httpx.AsyncClient, endpoint: Endpoint) -> bool:
    """Whether the server at ``endpoint`` answers ``api/status`` with its credential: the
    health check that makes a workload READY."""
    host = f"[{endpoint.host}]" if ":" in endpoint.host else endpoint.host
    try:
        response = await http.get(
            f"http://{host}:{endpoint.port}{endpoint.base_path}api/status",
            headers=dict(endpoint.headers),
        )
    except httpx.HTTPError:
        return False
    return response.status_code == 200
