"""The ``demanager`` command: server-side verbs and the user's verbs, one Typer app."""
