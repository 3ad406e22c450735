"""Keep the upstream credential out of everything the proxy sends back.

A notebook server may echo its own token into what it serves: JupyterLab writes
it into every page's configuration, for its scripts to use. The caller must never
see it, so each response body passes through a ``Scrubber`` that masks every
occurrence of the credential with ``*`` of the same length (so ``Content-Length``
stays true). It streams: it holds back only ``len(secret) - 1`` bytes between
chunks, enough to catch a secret split across two.

Bodies reach it uncompressed because the proxy never asks the upstream for a
compressed answer (compressing on loopback saves nothing anyway).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

MIN_SECRET = 16
"""Shorter values are not treated as secrets: masking them would corrupt ordinary text."""


def secrets_of(headers: Mapping[str, str]) -> list[bytes]:
    """The credential values in the upstream headers (``token X`` -> ``X``)."""
    found = []
    for value in headers.values():
        secret = value.rsplit(" ", 1)[-1].encode("latin-1")
        if len(secret) >= MIN_SECRET:
            found.append(secret)
    return found


class Scrubber:
    def __init__(self, secrets: Iterable[bytes]) -> None:
        self._secrets = [s for s in secrets if s and b"*" not in s]
        self._keep = max((len(s) for s in self._secrets), default=1) - 1
        self._tail = b""

    def feed(self, chunk: bytes) -> bytes:
        if not self._secrets:
            return chunk
        data = self._tail + chunk
        for secret in self._secrets:
            if secret in data:
                data = data.replace(secret, b"*" * len(secret))
        if self._keep == 0:
            self._tail = b""
            return data
        # Any partial secret can only start in the last ``keep`` bytes.
        self._tail = data[-self._keep:]
        return data[: -self._keep]

    def flush(self) -> bytes:
        rest, self._tail = self._tail, b""
        return rest
