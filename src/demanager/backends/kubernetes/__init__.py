"""The Kubernetes backend: a Pod, a PersistentVolumeClaim and a Service per instance.

``backend.py`` holds the backend; ``manifests.py`` the pure functions that build what
it creates, ``pods.py`` those that read pods, ``api.py`` its calls to the API server
and ``watcher.py`` its one watch of the pods. Importing this package imports no
Kubernetes client.
"""
