"""The Kubernetes backend: a Pod, a PersistentVolumeClaim and a Service per instance.

``backend.py`` holds the backend (the only module that talks to the API server, with
``watcher.py``), ``manifests.py`` the pure functions that build what it creates.
Importing this package imports no Kubernetes client.
"""
