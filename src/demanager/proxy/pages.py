"""What the proxy answers when it does not forward: HTML pages for browsers, the
contract's JSON errors for API clients.

A browser is a caller whose ``Accept`` names ``text/html``. Every page is built
from fixed text with every variable part escaped, and carries the headers that
keep it from being framed, sniffed or leaking its URL (which may hold a signed
link) through ``Referer``.
"""

from __future__ import annotations

from html import escape
from urllib.parse import quote

from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from demanager import errors
from demanager.domain.lifecycle import InstanceStatus
from demanager.schemas.errors import lookup
from demanager.web.headers import NO_SCRIPT_CSP, page_headers

SIGN_IN_PATH = "/console/sign-in"

#: The pages' own policy (web/headers.py), narrowed: no script at all on these pages.
PAGE_HEADERS = {**page_headers(NO_SCRIPT_CSP), "Cache-Control": "no-store"}

#: Why the sign-in page is shown; only these fixed texts are ever rendered.
REASONS = {
    "expired": "Your session or link has expired. Sign in again.",
    "invalid": "That link or session is not valid. Sign in again.",
    "failed": "Sign-in failed. Check the project and your token or user name and password.",
    "refused": "You may not open this notebook with that account.",
    "throttled": "Too many failed sign-ins. Wait a few minutes, then try again.",
}

_TRANSITIONAL = {
    InstanceStatus.CREATING, InstanceStatus.STARTING, InstanceStatus.RESTARTING,
    InstanceStatus.CREATE_QUEUING, InstanceStatus.START_QUEUING,
    InstanceStatus.READY_TO_START, InstanceStatus.UNAVAILABLE,
}


def wants_html(accept: str | None) -> bool:
    return accept is not None and "text/html" in accept.lower()


def _page(title: str, body: str, *, status: int, refresh: int | None = None) -> HTMLResponse:
    meta = f'<meta http-equiv="refresh" content="{refresh}">' if refresh else ""
    html = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'{meta}<title>{escape(title)} · demanager</title><link rel="icon" href="data:,">'
        '<link rel="stylesheet" href="/console/static/console.css"></head>'
        f'<body><main id="main" class="sign-in"><div class="card">{body}</div></main>'
        "</body></html>"
    )
    return HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)


def sign_in_page(next_path: str, *, reason: str | None = None, project: str = "",
                 status: int = 200) -> HTMLResponse:
    message = REASONS.get(reason or "")
    error = f'<div class="form-error" role="alert">{escape(message)}</div>' if message else ""
    body = f"""<form method="post" action="{SIGN_IN_PATH}">
<h1>Sign in to open the notebook</h1>
<p class="muted">Use your user name and password, or an API token, and the project.</p>
<input type="hidden" name="next" value="{escape(next_path)}">
<div class="field"><label for="project">Project ID</label>
<input id="project" name="project" type="text" required spellcheck="false"
 autocapitalize="off" value="{escape(project)}"></div>
<div class="field"><label for="user_name">User name</label>
<input id="user_name" name="user_name" type="text" autocomplete="username"
 spellcheck="false" autocapitalize="off"></div>
<div class="field"><label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password"></div>
<p class="muted">or</p>
<div class="field"><label for="token">API token</label>
<input id="token" name="token" type="password" autocomplete="off" spellcheck="false"></div>
{error}<button type="submit" class="button primary wide">Sign in</button></form>"""
    return _page("Sign in", body, status=status)


def sign_in_redirect(next_path: str, reason: str | None = None) -> RedirectResponse:
    query = f"next={quote(next_path, safe='')}"
    if reason:
        query += f"&reason={reason}"
    return RedirectResponse(f"{SIGN_IN_PATH}?{query}", status_code=302, headers=PAGE_HEADERS)


def not_found_page() -> HTMLResponse:
    body = ("<h1>Notebook not found</h1><p>This notebook does not exist, or you may not "
            'open it. <a href="/console">Go to the console</a>.</p>')
    return _page("Notebook not found", body, status=400)


def not_running_page(status: str, *, answering: bool = True) -> HTMLResponse:
    try:
        state = InstanceStatus(status)
    except ValueError:
        state = None
    if not answering:
        text = "The notebook server is not answering right now. This page retries by itself."
        refresh: int | None = 5
    elif state in _TRANSITIONAL:
        text = f"The notebook is {escape(status)}. This page reloads when it may be ready."
        refresh = 5
    else:
        text = (f"The notebook is {escape(status)}, not running. Start it from the "
                '<a href="/console">console</a> or with <code>demanager instances start</code>.')
        refresh = None
    body = f"<h1>The notebook is not running</h1><p>{text}</p>"
    return _page("Not running", body, status=400, refresh=refresh)


def json_error(exc: errors.DemanagerError) -> JSONResponse:
    status, code = lookup(exc)
    # The API's own content type (api/responses.py), so clients see one shape everywhere.
    return JSONResponse({"error_code": code, "error_message": exc.message}, status_code=status,
                        media_type="application/json; charset=UTF-8")


def error_answer(exc: errors.DemanagerError, *, browser: bool, next_path: str) -> Response:
    """The answer to a refused request, for a browser or an API client."""
    if not browser:
        return json_error(exc)
    if isinstance(exc, errors.TokenMissing):
        return sign_in_redirect(next_path)
    if isinstance(exc, errors.TokenExpired):
        return sign_in_redirect(next_path, "expired")
    if isinstance(exc, errors.AuthError | errors.ProjectMismatch):
        return sign_in_redirect(next_path, "invalid")
    if isinstance(exc, errors.InternalError | errors.Busy):
        status, _ = lookup(exc)
        body = f"<h1>Try again in a moment</h1><p>{escape(exc.message)}</p>"
        return _page("Try again", body, status=status, refresh=5)
    if isinstance(exc, errors.NotRunning):
        return not_running_page(exc.status, answering=not isinstance(exc, errors.NotAnswering))
    return not_found_page()
