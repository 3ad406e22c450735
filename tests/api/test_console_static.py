"""The console's files are served, with the right types and headers (no browser needed)."""

from __future__ import annotations

import re

import httpx
import pytest

from demanager.web import console
from tests.server import ServerProcess


@pytest.mark.parametrize("path", ["/console", "/console/"])
def test_page_is_served_at_both_paths(server: ServerProcess, path: str) -> None:
    response = httpx.get(f"{server.url}{path}")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert response.headers["cache-control"] == "no-cache"
    assert '<script type="module" src="/console/static/app.js">' in response.text


def test_every_referenced_file_is_served(server: ServerProcess) -> None:
    """Each asset the page links and each module another module imports answers 200:
    a missing or misnamed file would only show as a blank page in a browser."""
    page = (console.STATIC_DIR / "index.html").read_text(encoding="utf-8")
    wanted = set(re.findall(r'(?:src|href)="/console/static/([^"]+)"', page))
    for module in console.STATIC_DIR.glob("*.js"):
        wanted |= set(re.findall(r'from "\./([^"]+)"', module.read_text(encoding="utf-8")))
    assert {"app.js", "console.css"} <= wanted
    for name in sorted(wanted):
        assert (console.STATIC_DIR / name).is_file(), name
        response = httpx.get(f"{server.url}/console/static/{name}")
        assert response.status_code == 200, name
        kind = "text/css" if name.endswith(".css") else "text/javascript"
        assert response.headers["content-type"].startswith(kind), (name, response.headers)


def test_static_files_are_flat_for_packaging() -> None:
    """pyproject's package-data ships ``web/static/*``: a sub-folder would be left out."""
    assert [p for p in console.STATIC_DIR.iterdir() if p.is_dir()] == []


def test_unknown_console_file_is_a_contract_404(server: ServerProcess) -> None:
    response = httpx.get(f"{server.url}/console/static/nope.js")
    assert response.status_code == 404
    assert response.json()["error_code"] == "ModelArts.2836"


def test_console_stays_out_of_the_openapi_document(server: ServerProcess) -> None:
    paths = httpx.get(f"{server.url}/openapi.json").json()["paths"]
    assert not [p for p in paths if p.startswith("/console")]
