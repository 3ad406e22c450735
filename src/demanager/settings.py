"""Server settings: environment variables prefixed ``DEMANAGER_``, an optional
config file, and CLI flags, built once at start and passed down (no module-level
instance).

Precedence: CLI flags > environment > config file (``DEMANAGER_CONFIG_FILE``,
YAML) > defaults.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from demanager.backends.inventory import parse_gpu_list
from demanager.backends.options import DockerOptions, FakeOptions, KubernetesOptions, ProcessOptions
from demanager.objectstore.options import S3Options

BUILT_IN_SECTIONS = ("process", "docker", "kubernetes", "fake")


class PolicyOptions(BaseModel):
    """The lifecycle policy beyond the contract's auto-stop (``DEMANAGER_POLICY__…``);
    docs/lifecycle-policy.md explains each part. A zero turns a part off."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    idle_timeout_seconds: int = Field(default=0, ge=0)
    """Stop a notebook nobody used for this long, judged from Jupyter's own activity
    (a busy kernel is never idle); 0: never judged idle."""
    idle_connected_is_active: bool = True
    """Whether a kernel with an open connection (a browser tab) counts as in use."""
    max_lifetime_seconds: int = Field(default=0, ge=0)
    """Stop every run after this long, whatever it does; 0: no limit."""
    warn_before_seconds: int = Field(default=300, ge=0)
    """How long before any stop (auto-stop, idle, lifetime) its warning event comes;
    0: no warnings."""
    max_extension_seconds: int = Field(default=0, ge=0)
    """How much a user may extend one run in all (``…/instances/{id}/extend``); 0: no
    extensions."""
    activity_probe_seconds: float = Field(default=30.0, gt=0)
    """How often a running notebook's activity is read, at most (with an idle timeout)."""
    webhook_url: str | None = None
    """If set, every stop warning is also POSTed here as JSON."""
    webhook_secret: SecretStr | None = None
    """If set, each webhook request is signed: ``X-Demanager-Signature: sha256=<HMAC of
    the body>``."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="DEMANAGER_", env_nested_delimiter="__", extra="ignore"
    )

    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = Field(default=Path("./demanager-data"))
    """Holds the SQLite file, the EVS volumes and the process backend's runtime files."""
    database_url: str | None = None
    """SQLAlchemy async URL; default ``sqlite+aiosqlite:///{data_dir}/demanager.db``."""
    public_url: str | None = None
    """Base URL clients reach the server at (``target_domain``); default from host/port."""
    backend: str = "process"
    """Entry point name in the ``demanager.backends`` group: process, docker, kubernetes,
    fake, or a third-party backend's name. Its settings are its own section."""
    process: ProcessOptions = Field(default_factory=ProcessOptions)
    """The process backend's section (``DEMANAGER_PROCESS__…``)."""
    docker: DockerOptions = Field(default_factory=DockerOptions)
    """The Docker backend's section (``DEMANAGER_DOCKER__…``)."""
    kubernetes: KubernetesOptions = Field(default_factory=KubernetesOptions)
    """The Kubernetes backend's section (``DEMANAGER_KUBERNETES__…``)."""
    fake: FakeOptions = Field(default_factory=FakeOptions)
    """The fake backend's section (``DEMANAGER_FAKE__…``), for tests and benchmarks."""
    gpus: str = "auto"
    """The host's GPUs, given whole to GPU flavors: ``auto`` (the process backend asks
    ``nvidia-smi``), ``none``, or ids (``0,1`` or UUIDs) as ``CUDA_VISIBLE_DEVICES``
    names them. The docker and fake backends assign only listed ones."""
    catalog_file: Path | None = None
    """YAML catalog of profiles, flavors and pools; default: the built-in catalog."""
    bootstrap_token: str | None = None
    """Operator token valid for every project; generated (and kept in the data dir) if unset."""
    secret_key: str | None = None
    """Key of token digests and signed links; generated (kept 0600 in the data dir) if unset.
    Every server sharing one database must be given the same key."""
    instance_quota: int = 10
    """Live instances per project (contract: 6302)."""
    min_auto_stop_seconds: int = 3600
    """Lower bound of auto-stop durations; lower it only for tests and demos."""
    policy: PolicyOptions = Field(default_factory=PolicyOptions)
    """The lifecycle policy's section (``DEMANAGER_POLICY__…``): idle timeout, maximum
    lifetime, warnings, extensions and the warning webhook."""
    object_storage_root: Path | None = None
    """A directory that stands in for OBS: enables obs/obsfs storage (a bucket is a sub-folder)."""
    s3: S3Options = Field(default_factory=S3Options)
    """The S3 object store's section (``DEMANAGER_S3__…``): endpoint, region, credentials."""
    start_timeout_seconds: float = 120.0
    """How long a workload may take to answer its health check before the start fails."""
    health_failures: int = Field(default=3, ge=1)
    """Health probes in a row a RUNNING notebook may fail (alive but not answering, e.g.
    frozen) before it is UNAVAILABLE; one probe per sweep."""
    reconcile_interval_seconds: float = 2.0
    """Period of the full level-triggered sweep (new work wakes the engine at once)."""
    reservation_seconds: float = Field(default=60.0, gt=0)
    """How long a slot reserved for the head of a free flavor's queue (READY_TO_START)
    waits for its start; a reservation not used by then lapses (the instance stops) and
    the slot goes to the next in line."""
    pools_refresh_seconds: float = Field(default=5.0, gt=0)
    """How often each server re-reads the pools managed with ``demanager pools``: a change
    applies on every replica within this long, without a restart."""
    workers: int = 8
    """Instances the engine drives at the same time (a second lane of as many serves the
    API's requests, so a sweep never delays a user's stop)."""
    tombstone_retention_seconds: int = Field(default=7 * 86_400, ge=0)
    """How long a deleted instance's row (status DELETED) is kept before the sweep purges it."""
    event_retention_seconds: int = Field(default=7 * 86_400, ge=1)
    """How long the event log keeps an event; the sweep purges older ones (at most once a
    minute)."""
    node_id: str | None = Field(default=None, max_length=60, pattern=r"^[A-Za-z0-9._-]+$")
    """Name of the node this server's local workloads run on; default: the host name plus a
    digest of the boot id and PID namespace. Replicas that can see each other's processes
    must share it, and replicas that cannot must not."""
    instance_label: str = Field(
        default="demanager", max_length=63, pattern=r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$"
    )
    """A name for this deployment, put on every container, volume and network the container
    backends create: two deployments sharing a Docker host or a cluster need different ones,
    and the replicas of one deployment share it."""
    lease_seconds: float = Field(default=15.0, gt=0)
    """How long a replica's claim on an instance (and its heartbeat) lasts unrenewed: a
    replica that dies has its instances taken over by the others after this long."""
    max_body_bytes: int = 1_048_576
    """Largest API request body; larger ones answer 413 (the notebook proxy is not limited)."""
    rate_limit_per_second: float = Field(default=100.0, ge=0)
    """Requests per second each token (or tokenless client address) may make; 0: no limit."""
    rate_limit_burst: int = Field(default=1000, ge=1)
    """Requests a caller may make at once before the per-second rate applies."""
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Browser origins allowed to call the API cross-origin; empty: no CORS headers at all."""
    link_ttl_seconds: int = Field(default=300, ge=1, le=86400)
    """Lifetime of a signed link to a notebook (``…/signed-url``)."""
    session_ttl_seconds: int = Field(default=43200, ge=60, le=604800)
    """Lifetime of the proxy's session cookie and of the token route's value."""
    auth_cache_seconds: float = Field(default=2.0, ge=0, le=60)
    """How long a token found valid is taken as valid without asking the store again
    (expiry is still checked each time); a revocation, user or membership change made
    through this server applies at once, one made elsewhere within this long. 0: ask
    the store on every request."""
    log_level: str = "info"
    log_format: Literal["text", "json"] = "text"
    """``json``: one JSON object per log line (time, level, logger, message, request id,
    fields), plus a line per API request; secrets are redacted in both forms."""
    metrics_token: str | None = None
    """If set, ``/metrics`` answers only requests with ``Authorization: Bearer <it>``;
    unset, it is open like ``/healthz`` and ``/readyz`` (scrape it on a private network)."""
    shutdown_grace_seconds: float = Field(default=10.0, ge=0)
    """On SIGTERM, how long transitions in progress (a launch, a stop) may take to finish
    before the server exits; notebooks themselves keep running either way."""
    keystone_token_ttl_seconds: int = Field(default=86_400, ge=60)
    """Lifetime of the tokens ``POST /v3/auth/tokens`` issues."""
    keystone_domain_name: str = "Default"
    """The one Keystone domain every user and project lives in (any other is refused)."""
    keystone_domain_id: str = "default"
    keystone_region: str = "RegionOne"
    """Region id of the service catalog's endpoints."""
    login_failures_per_user: int = Field(default=5, ge=1)
    """Failed password sign-ins per user name (or id) in a window, before 429."""
    login_failures_per_address: int = Field(default=20, ge=1)
    """Failed password sign-ins per client address in a window, before 429."""
    login_failure_window_seconds: int = Field(default=300, ge=1)

    @model_validator(mode="after")
    def _heartbeat_within_lease(self) -> Settings:
        # A replica says it is alive at each sweep: a sweep slower than half a lease
        # would let the others take it for dead and take over its instances.
        if self.reconcile_interval_seconds * 2 > self.lease_seconds:
            raise ValueError(
                f"reconcile_interval_seconds ({self.reconcile_interval_seconds}) must be at "
                f"most half of lease_seconds ({self.lease_seconds})"
            )
        return self

    @field_validator("gpus", mode="after")
    @classmethod
    def _gpu_list(cls, value: str) -> str:
        parse_gpu_list(value)  # raises ValueError naming the bad id
        return value.strip()

    @property
    def object_storage(self) -> bool:
        """Whether obs and obsfs are served at all: by S3 when its section is set (keys
        are then checked per project at create: 6319, 6320), else by the folder standing
        in for it."""
        return self.s3.configured or self.object_storage_root is not None

    @property
    def gpu_list(self) -> tuple[str, ...] | None:
        """``gpus`` as ids; None for ``auto``."""
        return parse_gpu_list(self.gpus)

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        # The environment gives one string: "https://a.example, https://b.example".
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("data_dir", mode="after")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir / 'demanager.db'}"

    @property
    def target_domain(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"


def backend_section(settings: Settings, name: str) -> Any:
    """A backend's settings section: the built-in backends' own models, or for any other
    backend a mapping gathered from ``DEMANAGER_{NAME}__{KEY}`` variables over the config
    file's ``{name}:`` mapping, which the backend's ``options_type`` then checks."""
    if name in BUILT_IN_SECTIONS:
        return getattr(settings, name)
    section: dict[str, Any] = {}
    config_file = os.environ.get("DEMANAGER_CONFIG_FILE")
    if config_file:
        loaded = yaml.safe_load(Path(config_file).read_text(encoding="utf-8")) or {}
        if isinstance(loaded, dict) and isinstance(loaded.get(name), dict):
            section.update(loaded[name])
    prefix = f"DEMANAGER_{name.upper()}__"
    for key, value in os.environ.items():
        if key.upper().startswith(prefix):
            section[key[len(prefix) :].lower()] = value
    return section


def load_settings(**overrides: Any) -> Settings:
    """Build the settings from the config file, the environment and ``overrides``."""
    file_values: dict[str, Any] = {}
    config_file = os.environ.get("DEMANAGER_CONFIG_FILE")
    if config_file:
        loaded = yaml.safe_load(Path(config_file).read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{config_file}: expected a mapping of settings")
        file_values = {
            k: _without_environment(k, v)
            for k, v in loaded.items()
            if f"DEMANAGER_{k.upper()}" not in os.environ
        }
    clean = {k: v for k, v in overrides.items() if v is not None}
    return Settings(**{**file_values, **clean})


def _without_environment(key: str, value: Any) -> Any:
    """A backend section of the config file, less what the environment sets (which wins,
    setting by setting)."""
    if key not in BUILT_IN_SECTIONS or not isinstance(value, dict):
        return value
    return {k: v for k, v in value.items() if f"DEMANAGER_{key}__{k}".upper() not in os.environ}
