"""The web console (``console.mount``) and the static files it serves."""
