"""demanager: development environments behind the ModelArts DevEnviron API."""

__version__ = "0.1.0"
