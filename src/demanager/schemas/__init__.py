"""Pydantic models of the wire format (contract §3), shared by the server and the SDK.

Keys the contract marks "always" are always set, even to ``None``; keys marked
"when applicable" are left unset and dropped on output (``exclude_unset``).
"""
