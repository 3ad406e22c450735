"""A Kubernetes API-server stand-in, for testing the Kubernetes backend without a cluster.

See ``standin.py``; docs/kubernetes.md says what it covers and what it does not.
"""
