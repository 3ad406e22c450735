"""The HTTP face: FastAPI routes that validate, authorise and record intent."""
