"""The engine: use cases for the API and CLI, and the reconciler that does the slow work."""
