"""Backends turn "make this instance run / stop / go away" into real workloads.

They are plugins: entry points in the ``demanager.backends`` group, chosen by
short name (``DEMANAGER_BACKEND``).
"""
