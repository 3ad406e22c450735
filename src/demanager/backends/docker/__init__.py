"""The Docker backend: one container per instance, a named volume as its EVS disk.

``backend`` holds the contract, ``daemon`` the calls to the Docker daemon (off the
event loop), ``config`` the container's configuration as a pure function. Nothing is
imported here, so that naming the package does not load the Docker client.
"""
