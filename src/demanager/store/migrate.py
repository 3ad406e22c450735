"""``python -m demanager.store.migrate``: bring the database that ``DEMANAGER_MIGRATE_URL``
names to the newest schema. The server runs it as a child when its database is behind,
so that alembic is never loaded in the server itself."""

from __future__ import annotations

import logging
import os
import sys

from demanager.store.database import URL_VARIABLE, upgrade


def main() -> int:
    url = os.environ.get(URL_VARIABLE)
    if not url:
        print(f"{URL_VARIABLE} is not set", file=sys.stderr)
        return 2
    # One line per message: the server logs each as its own.
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    logging.getLogger("alembic.runtime.migration").setLevel(logging.INFO)  # each step
    upgrade(url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
