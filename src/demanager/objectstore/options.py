"""The S3 section of the server's settings (``DEMANAGER_S3__…``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class S3Options(BaseModel):
    model_config = ConfigDict(extra="forbid")

    endpoint_url: str | None = None
    """The S3 endpoint, e.g. ``https://obs.eu-de.otc.t-systems.com`` or a MinIO URL;
    unset with an access key: the AWS endpoint of ``region``."""
    region: str = "us-east-1"
    """The region requests are signed for."""
    access_key_id: str | None = None
    """The deployment's access key (AK)."""
    secret_access_key: SecretStr | None = None
    """The secret key (SK); kept as a secret so that it never reaches logs or answers."""
    addressing_style: Literal["auto", "path", "virtual"] = "path"
    """``path`` (``endpoint/bucket/key``, what MinIO and most self-hosted stores need)
    or ``virtual`` (``bucket.endpoint/key``, what OBS and AWS prefer)."""

    sync_seconds: float = Field(default=30.0, gt=0)
    """How often a running notebook's read-write buckets are synced up (and at stop)."""

    @property
    def configured(self) -> bool:
        """Whether the operator asked for S3 at all (an endpoint or a key)."""
        return self.endpoint_url is not None or self.access_key_id is not None

    @property
    def has_credentials(self) -> bool:
        return bool(self.access_key_id) and self.secret_access_key is not None
