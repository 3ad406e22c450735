"""The server's log lines: text or one JSON object per line, with request ids, and
never a secret.

A request's id is kept in a context variable for as long as the request is served;
every line logged meanwhile, by any module, carries it (asyncio copies the context
into tasks the request starts, so the engine's work on its behalf carries it too).

Redaction is the last step of formatting, so it covers every field, the message,
its arguments and a traceback alike: the server's own secrets (tokens, keys) are
replaced wherever they appear, as are the values of anything that looks like a
credential (``token=…``, ``Authorization: …``, ``password: …``, a URL's password,
a demanager token by its prefix).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Final

REQUEST_ID: ContextVar[str | None] = ContextVar("demanager_request_id", default=None)
"""The id of the request being served, if any."""

REDACTED: Final = "[redacted]"
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_SECRET_NAME = (
    r"[\w-]*(?:token|secret|passw(?:or)?d|api[_-]?key|access[_-]?key|credential|signature"
    r"|cookie)[\w-]*"
)
_PATTERNS: Final = (
    # Authorization: Bearer x / authorization=Basic x (the scheme stays, the value goes)
    re.compile(
        r"(?i)(\bauthorization[\"']?\s*[:=]\s*[\"']?(?:bearer|basic|token)?\s*)[^\s\"',;&}]+"
    ),
    # token=x, "password": "x", X-Auth-Token: x, secret_key='x'
    re.compile(rf"(?i)(\b{_SECRET_NAME}[\"']?\s*[:=]\s*[\"']?)[^\s\"',;&}}]+"),
    # scheme://user:password@host
    re.compile(r"(://[^/\s:@]+:)[^/\s@]+(?=@)"),
)
_TOKEN = re.compile(r"\bdm[otg]_[A-Za-z0-9_\-.]{8,}")
"""demanager's own tokens and signed links, whatever surrounds them."""
_SECRET_KEY = re.compile(rf"(?i)^{_SECRET_NAME}$|^authorization$")

_STANDARD = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "color_message"}  # uvicorn's message with terminal colours
)
"""Attributes every record has; any other was passed with ``extra=`` and is a field."""


class Redactor:
    """Replaces secrets in text: known values exactly, and credential-shaped ones."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        # Longest first, so that a secret containing another is replaced whole.
        self._known = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._known:
            text = text.replace(secret, REDACTED)
        text = _TOKEN.sub(REDACTED, text)
        for pattern in _PATTERNS:
            text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
        return text

    def value(self, key: str, value: Any) -> Any:
        """A JSON field's value: redacted whole if its name says it is a secret."""
        if _SECRET_KEY.match(key) and value not in (None, ""):
            return REDACTED
        if isinstance(value, str):
            return self(value)
        if isinstance(value, int | float | bool) or value is None:
            return value
        return self(str(value))


class RequestIdFilter(logging.Filter):
    """Puts the current request's id on every record (``None`` outside requests)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


class TextFormatter(logging.Formatter):
    def __init__(self, redactor: Redactor) -> None:
        super().__init__(TEXT_FORMAT)
        self._redact = redactor

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = getattr(record, "request_id", None)
        if request_id:
            line += f" [request {request_id}]"
        return self._redact(line)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id, the fields
    given with ``extra=``, and the traceback if any."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self._redact = redactor

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id:
            entry["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in entry and key != "request_id":
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        clean = {key: self._redact.value(key, value) for key, value in entry.items()}
        return json.dumps(clean, ensure_ascii=False, default=str)


def configure_logging(level: str, fmt: str = "text", secrets: Iterable[str | None] = ()) -> None:
    """Send every logger's lines to stderr in ``fmt`` (``text`` or ``json``), with the
    request id and with ``secrets`` (and anything shaped like one) redacted."""
    redactor = Redactor(secrets)
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter(redactor) if fmt == "json" else TextFormatter(redactor))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Uvicorn's loggers carry handlers of their own: send their lines through ours.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    # One line per health probe would drown everything else.
    logging.getLogger("httpx").setLevel(logging.WARNING)
