"""The web console: a static page and its ES modules, served at ``/console``.

There is no build step and no server-side rendering: the page talks to the
public REST API with the token the user signs in with, so the console can do
nothing that any other API client could not. This module only serves files.

``/console`` and ``/console/`` both answer the page itself (the app does not
redirect slashes, and the contract middleware only folds them under ``/v1/``),
which is why the page refers to its assets by absolute path.
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.types import Scope

from demanager.web.headers import page_headers

STATIC_DIR = Path(__file__).parent / "static"
PREFIX = "/console"

#: The page holds a bearer token in session storage, so it loads script from its
#: own origin only and may not be framed (clickjacking of the action buttons).
PAGE_HEADERS = {
    **page_headers(),
    # Revalidate on every visit so an upgraded server never runs a stale page.
    "Cache-Control": "no-cache",
}


class _Revalidated(StaticFiles):
    """Static files that the browser must revalidate (cheap: an ETag match is a 304),
    so the page and its modules never come from two different versions."""

    def file_response(self, full_path: str | os.PathLike[str], stat_result: os.stat_result,
                      scope: Scope, status_code: int = 200) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def mount(app: FastAPI) -> None:
    """Add the console's page and assets to ``app`` (kept out of the OpenAPI document)."""
    router = APIRouter(include_in_schema=False)

    @router.get(PREFIX)
    @router.get(f"{PREFIX}/")
    async def console_page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8",
                            headers=PAGE_HEADERS)

    app.include_router(router)
    app.mount(f"{PREFIX}/static", _Revalidated(directory=STATIC_DIR), name="console-static")
