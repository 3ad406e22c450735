"""The notebook proxy: ``/notebooks/{instance_id}/…`` (HTTP and WebSocket) to the
instance's own server, after checking on every request that the caller may use
that instance.

``access`` decides who passes, ``http`` and ``websocket`` stream the traffic,
``forwarding`` says which headers cross, ``pages`` and ``signin`` are what a
browser sees, and ``gateway`` ties them together as an ASGI middleware. The
proxy reads the endpoint the engine stored; it never calls a backend.
"""
