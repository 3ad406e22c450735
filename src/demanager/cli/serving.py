"""The server process.

``demanager serve`` checks its options and the settings with the command line's
libraries (Typer, Rich, the SDK's client), then replaces itself with this module
(``python -P -m demanager.cli.serving OPTIONS``), which imports only what serving
needs: a server keeps every module it imported for its whole life, and the command
line's were about a tenth of its memory. Same PID, so whatever started ``serve``
(a service manager, a test) still holds the server.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types import FrameType

    from demanager.settings import Settings


def configure_logging(settings: Settings, token: str | None = None) -> None:
    """The server's logging, with every secret it knows masked in what it writes."""
    from sqlalchemy import make_url
    from sqlalchemy.exc import ArgumentError

    from demanager.api.logs import configure_logging as configure

    try:
        database_password = make_url(settings.sqlalchemy_url).password
    except ArgumentError:
        database_password = None  # the server's start says what is wrong with the URL
    s3_secret = settings.s3.secret_access_key
    configure(settings.log_level, settings.log_format, secrets=(
        token, settings.bootstrap_token, settings.secret_key, settings.metrics_token,
        str(database_password) if database_password else None,
        s3_secret.get_secret_value() if s3_secret is not None else None,
    ))


def serve(settings: Settings) -> None:
    """Serve the API, the proxy and the console, and run the engine, until a signal."""
    import uvicorn

    from demanager.api.app import create_app
    from demanager.engine.runtime import operator_token
    from demanager.store.backup import hold_data_dir

    # Whatever the server writes is private unless it says otherwise (the data dir,
    # volumes and shared object-storage folders set their modes explicitly).
    os.umask(0o077)
    token = operator_token(settings)
    configure_logging(settings, token)  # now the generated token is known too
    url = settings.target_domain
    database = settings.sqlalchemy_url.split("@")[-1]
    if settings.log_format == "json":
        # Lines for a log collector, which must never receive the token: it is in the
        # settings or in the data dir, where the operator can read it.
        logging.getLogger("demanager").info(
            "demanager serving at %s (backend: %s, database: %s)", url, settings.backend,
            database, extra={"url": url, "backend": settings.backend},
        )
    else:
        print(f"demanager serving at {url}  (backend: {settings.backend}, database: {database})")
        print(f"operator token: {token}")
        print(f"try: curl -H 'X-Auth-Token: {token}' "
              f"'{url}/v1/myproject/demanager/instances?de_type=Notebook'")
        sys.stdout.flush()
    app = create_app(settings)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            # Uvicorn waits for open responses before the app hears of the shutdown;
            # endless ones (event streams) must be told now, or they hold it up.
            runtime = getattr(app.state, "runtime", None)
            if runtime is not None:
                runtime.events.closing = True
            super().handle_exit(sig, frame)

    # Held while serving, so that `demanager restore` never replaces a live database.
    lock = hold_data_dir(settings.data_dir)
    try:
        Server(uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            # The app logs each request itself, by route template: a raw path may carry a
            # signed link's token, and uvicorn's own configuration would bypass ours.
            access_log=False,
            log_config=None,
            timeout_graceful_shutdown=5,
        )).run()
    finally:
        os.close(lock)


def main(argv: list[str]) -> int:
    """``argv``: one JSON object of the options ``demanager serve`` was given."""
    from pydantic import ValidationError

    from demanager.settings import load_settings

    try:
        options = json.loads(argv[0]) if argv else {}
        settings = load_settings(**options)
    except (ValueError, TypeError, ValidationError) as exc:
        # ``serve`` checked these a moment ago; only a changed config file lands here.
        print(f"error: {exc}", file=sys.stderr)
        return 2
    serve(settings)
    return 0


def skip_httpx_command_line() -> None:
    """Keep httpx from importing its command line's libraries into the server.

    ``import httpx`` imports ``httpx._main``, its ``httpx`` command, which imports Rich,
    Pygments and Click when they are installed, as they are with demanager's command
    line: 4 MiB that the server never uses. A ``None`` in ``sys.modules`` makes that
    import fail, which httpx expects (it then replaces the command with a notice)."""
    if "httpx" not in sys.modules:
        sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]


if __name__ == "__main__":
    skip_httpx_command_line()
    sys.exit(main(sys.argv[1:]))
