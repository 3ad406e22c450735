"""The browser's way in: a sign-in form, and the session cookie it leads to.

A browser that reaches a notebook without a credential is sent to
``/console/sign-in?next=/notebooks/{id}/…``. The form takes a project and either
a user name and password or an API token; on success the caller gets a session
cookie for that one notebook and goes back to ``next``.

The cookie holds a signed grant (``identity/links.py``) and is HttpOnly (no
script can read it), SameSite=Lax (a cross-site form or script cannot send it)
and scoped to ``Path=/notebooks/{id}/``, so one notebook's pages never carry the
cookie of another. ``next`` must be a path under ``/notebooks/``: the form can
never send anyone to another site.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, unquote, urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from demanager import errors
from demanager.engine.runtime import Runtime
from demanager.identity.principal import Principal
from demanager.proxy import access, forwarding, pages

MAX_FORM_BYTES = 16 * 1024
_NEXT = re.compile(r"^/notebooks/([A-Za-z0-9._~%!$'()*+,;=:@-]+)/[^\s\\#]*$")


def safe_next(value: str | None) -> str:
    """``value`` if it is a path under ``/notebooks/{id}/`` of this site, else ``""``."""
    if not value or len(value) > 2048 or not _NEXT.match(value) or "//" in value:
        return ""
    return value


def instance_of(next_path: str) -> tuple[str, str] | None:
    """(raw path segment, instance id) of a safe ``next``."""
    match = _NEXT.match(next_path)
    if match is None:
        return None
    return match.group(1), unquote(match.group(1))


def cookie_header(raw_id: str, value: str, *, max_age: int, secure: bool) -> tuple[bytes, bytes]:
    attributes = [
        f"{forwarding.SESSION_COOKIE}={value}", f"Path=/notebooks/{raw_id}/", "HttpOnly",
        "SameSite=Lax", f"Max-Age={max_age}",
    ]
    if secure:
        attributes.append("Secure")
    return b"set-cookie", "; ".join(attributes).encode("latin-1")


def is_secure(runtime: Runtime, scheme: str) -> bool:
    return scheme in ("https", "wss") or runtime.settings.target_domain.startswith("https:")


def enter(runtime: Runtime, principal: Principal, raw_id: str, instance_id: str,
          next_path: str, scheme: str) -> RedirectResponse:
    """Set the notebook's session cookie and go to ``next_path``."""
    ttl = runtime.settings.session_ttl_seconds
    grant = runtime.identity.grant(principal, instance_id, ttl_seconds=ttl)
    response = RedirectResponse(next_path, status_code=303, headers=pages.PAGE_HEADERS)
    name, value = cookie_header(raw_id, grant.value, max_age=ttl,
                                secure=is_secure(runtime, scheme))
    response.raw_headers.append((name, value))
    return response


def same_origin(request: Request) -> bool:
    """No ``Origin`` (not a browser form) or the one of this site."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc == request.headers.get("host", "")


async def handle(runtime: Runtime, request: Request) -> Response:
    if request.method in ("GET", "HEAD"):
        reason = request.query_params.get("reason")
        return pages.sign_in_page(safe_next(request.query_params.get("next")),
                                  reason=reason if reason in pages.REASONS else None)
    if request.method != "POST":
        return JSONResponse({"error_code": "ModelArts.2803",
                             "error_message": "The method is not allowed on this path."},
                            status_code=405)
    form = await _read_form(request)
    next_path = safe_next(form.get("next"))
    project = form.get("project", "").strip()
    if not same_origin(request):
        return pages.sign_in_page(next_path, reason="failed", project=project, status=401)
    token = form.get("token", "").strip() or None
    user_name = form.get("user_name", "").strip() or None
    # Password guesses count against the same limits as Keystone's sign-in.
    throttle = runtime.login_throttle if token is None and user_name else None
    address = request.client.host if request.client else ""
    user_key = f"name:{user_name}"  # the key Keystone's sign-in counts a name under
    if throttle is not None:
        wait = throttle.retry_after(user_key, address)
        if wait:
            page = pages.sign_in_page(next_path, reason="throttled", project=project, status=429)
            page.headers["Retry-After"] = str(wait)
            return page
    try:
        principal = await runtime.identity.sign_in(
            project_id=project, token=token, user_name=user_name,
            password=form.get("password") or None,
        )
    except (errors.AuthError, errors.ProjectMismatch):
        if throttle is not None:
            throttle.failed(user_key, address)
        return pages.sign_in_page(next_path, reason="failed", project=project, status=401)
    if throttle is not None:
        throttle.succeeded(user_key)
    target = instance_of(next_path)
    try:
        if target is None:
            raise errors.InstanceNotFound("")
        instance = await runtime.instances.load(target[1])
        access.ensure_may_use(principal, instance, target[1])
    except errors.InstanceNotFound:
        return pages.sign_in_page(next_path, reason="refused", project=project, status=400)
    return enter(runtime, principal, target[0], target[1], next_path, request.url.scheme)


async def _read_form(request: Request) -> dict[str, str]:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return {}
    try:
        parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=16)
    except (UnicodeError, ValueError):
        return {}
    return {key: values[0] for key, values in parsed.items() if values}
