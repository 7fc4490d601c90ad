"""Settings: one pydantic-settings class, read once from the environment and passed down.

Every field can be set as ``FORECOURT_<NAME>`` in the environment or in a ``.env`` file.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import tempfile
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

SECRET_KEY_FILE = "secret-key"
OWNER_KEY_FILE = "owner-key"
SQLITE_FILE = "forecourt.db"
# The data folder and its files are the owner's alone. As root, the sandbox's group may also
# traverse the folder (never list or read it): sandboxed workers run as the sandbox user and,
# where namespaces are unavailable, reach their own directories under it by path.
PRIVATE_DIR_MODE = 0o700
ROOT_DATA_DIR_MODE = 0o710
PRIVATE_FILE_MODE = 0o600

DEFAULT_TIERS: dict[str, dict[str, int]] = {
    "free": {"minute": 60, "hour": 1_000, "day": 10_000},
    "pro": {"minute": 600, "hour": 20_000, "day": 200_000},
    "enterprise": {"minute": 6_000, "hour": 200_000, "day": 2_000_000},
}


class Settings(BaseSettings):
    """Forecourt's configuration. See the README for the table of variables."""

    model_config = SettingsConfigDict(
        env_prefix="FORECOURT_", env_file=".env", extra="ignore", frozen=True
    )

    data_dir: Path = Path("./data")
    database_url: str | None = None
    redis_url: str | None = None
    redis_prefix: str = "fc:"
    secret_key: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    webhook_allow_private: Annotated[str, NoDecode] = "false"

    # API keys
    key_environment: Literal["live", "test"] = "live"
    key_cache_ttl_s: float = Field(default=30.0, ge=0)
    key_rotation_grace_s: int = Field(default=86_400, ge=0)

    # Rate limiting
    rate_limit_tiers: dict[str, dict[str, int]] = Field(default_factory=lambda: DEFAULT_TIERS)
    default_tier: str = "free"
    ip_rate_limit: dict[str, int] = Field(default_factory=lambda: {"minute": 120})
    rate_limit_fail_open: bool = True

    # Sign-in, client addresses
    # Proxies (comma-separated CIDRs) whose X-Forwarded-For / Forwarded name the client;
    # empty: the peer's address is the client's, whatever the headers say.
    trusted_proxies: Annotated[str, NoDecode] = ""
    # Failed sign-ins from one address to one account before the lockout; each failure past
    # half of it doubles the wait before the next try. An account (from every address)
    # locks after five times as many.
    signin_lockout_failures: int = Field(default=10, ge=2, le=1000)
    signin_lockout_s: int = Field(default=900, gt=0, le=86_400)

    # HTTP
    max_body_bytes: int = Field(default=1_048_576, gt=0)
    cookie_secure: bool = True
    session_ttl_s: int = Field(default=7 * 86_400, gt=0)
    # Users: when a user is disabled or deleted, revoke the API keys that user created.
    revoke_keys_of_removed_users: bool = True
    usage_flush_interval_s: float = Field(default=5.0, gt=0)

    # Observability (docs/operations.md): the bearer token /metrics asks for (unset: open
    # when listening on loopback, to loopback clients otherwise), and the folder where the
    # processes of `forecourt serve` and `forecourt worker` share their Prometheus values
    # (unset: DATA_DIR/prometheus)
    metrics_token: str | None = Field(default=None, min_length=16)
    prometheus_dir: Path | None = None

    # Events
    event_retention_days: int = Field(default=30, gt=0)
    max_event_bytes: int = Field(default=262_144, gt=0)
    idempotency_window_s: int = Field(default=86_400, gt=0)

    # JSON (forecourt/codec.py): the deepest nesting of containers any JSON value may have
    # (event data, schemas, metadata, plugin config, input and output).
    json_max_depth: int = Field(default=64, ge=1, le=1000)

    # Webhook delivery
    delivery_concurrency: int = Field(default=256, gt=0, le=4096)
    delivery_batch_size: int = Field(default=200, gt=0, le=10_000)
    delivery_lease_s: float = Field(default=60.0, gt=0)
    delivery_poll_interval_s: float = Field(default=0.5, gt=0)
    delivery_shutdown_grace_s: float = Field(default=10.0, ge=0)
    endpoint_concurrency: int = Field(default=16, gt=0)
    # Processes that make the HTTP exchanges of a worker's deliveries; unset: one per core
    # beyond the first (at most 4); 0: the worker's own process.
    delivery_sender_processes: int | None = Field(default=None, ge=0, le=64)
    endpoint_disable_after_s: int = Field(default=5 * 86_400, gt=0)
    endpoint_disable_min_failures: int = Field(default=10, gt=0)
    secret_rotation_overlap_s: int = Field(default=86_400, ge=0)

    # Alert rules (docs/alerts.md): how often worker nodes evaluate them; 0: never in the
    # background (a rule is then evaluated only when asked to, as the tests do).
    alert_evaluation_interval_s: float = Field(default=30.0, ge=0, le=86_400)
    # The tenant summary and plugin health: how long a node reuses them; writes that change
    # them (events, runs, deliveries, alerts) drop them at once on every node.
    overview_cache_ttl_s: float = Field(default=10.0, ge=0, le=86_400)

    # Plugins: packages and trust
    plugin_max_package_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
    plugin_allow_unsigned: bool = False
    plugin_trusted_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Plugins: the sandbox
    plugin_sandbox_uid: int = Field(default=65534, gt=0)
    plugin_sandbox_gid: int = Field(default=65534, gt=0)
    plugin_sandbox_require: Literal["available", "all"] = "available"
    plugin_warm_workers: int = Field(default=1, ge=0, le=16)
    plugin_max_workers: int = Field(default=4, gt=0, le=64)
    # Plugins: a worker's tasks (threads) at once, and how long an unused version's workers
    # are kept for a tenant (see plugins/sandbox/pids.py and pool.py)
    plugin_max_threads: int = Field(default=64, ge=4, le=4096)
    plugin_idle_timeout_s: float = Field(default=300.0, gt=0)
    # Plugins: the most one run may ask for in its manifest's [resources]
    plugin_max_timeout_s: float = Field(default=120.0, gt=0, le=3600)
    plugin_max_cpu_s: float = Field(default=120.0, ge=1, le=3600)
    plugin_max_memory_mib: int = Field(default=2048, ge=64)
    plugin_max_file_mib: int = Field(default=1024, ge=1)
    plugin_max_open_files: int = Field(default=1024, ge=16)
    # Plugins: background runs
    plugin_event_concurrency: int = Field(default=8, gt=0, le=256)
    plugin_event_max_attempts: int = Field(default=4, gt=0, le=20)
    plugin_event_retry_base_s: float = Field(default=5.0, ge=0)
    plugin_poll_interval_s: float = Field(default=0.5, gt=0)
    plugin_schedule_events: Literal["failures", "all"] = "failures"
    plugin_execution_retention_days: int = Field(default=30, gt=0)

    # Metrics (docs/metrics.md): retention per resolution, the write buffer, the rollup job
    metrics_raw_retention_days: int = Field(default=7, gt=0)
    metrics_minute_retention_days: int = Field(default=90, gt=0)
    metrics_hour_retention_days: int = Field(default=396, gt=0)  # 13 months
    metrics_max_series_per_tenant: int = Field(default=10_000, gt=0)
    metrics_buffer_points: int = Field(default=100_000, gt=0)
    metrics_flush_interval_s: float = Field(default=0.5, gt=0)
    metrics_buffer_wait_s: float = Field(default=2.0, ge=0)
    metrics_rollup_interval_s: float = Field(default=10.0, gt=0)
    metrics_rollup_lease_s: float = Field(default=60.0, gt=0)
    metrics_rollup_batch: int = Field(default=1_000, gt=0, le=100_000)  # entries per claim
    metrics_prune_batch: int = Field(default=10_000, gt=0)

    # Live streams (WebSocket /ws and SSE /api/v1/stream; see docs/streams.md)
    stream_replay_window_s: float = Field(default=600.0, gt=0, le=86_400)
    stream_replay_max_messages: int = Field(default=100_000, gt=0)  # the in-process ring
    stream_heartbeat_s: float = Field(default=30.0, gt=0)
    stream_keepalive_s: float = Field(default=15.0, gt=0)  # SSE comment
    stream_send_queue: int = Field(default=256, ge=1, le=100_000)  # messages per client
    stream_max_subscriptions: int = Field(default=50, ge=1, le=10_000)  # per connection
    stream_max_connections_per_key: int = Field(default=20, ge=1)  # every node together (Redis)
    stream_max_client_message_bytes: int = Field(default=4096, ge=64, le=1_048_576)
    stream_client_messages_per_s: float = Field(default=10.0, gt=0)  # burst: 5 s worth
    stream_compression: bool = False  # WebSocket per-message deflate
    # Origins a cookie-authenticated WebSocket may come from (comma-separated); empty: the
    # server's own origin only.
    stream_allowed_origins: Annotated[str, NoDecode] = ""
    # A stream ends after this many seconds (the client reconnects and resumes); 0: never.
    stream_max_duration_s: float = Field(default=0.0, ge=0)
    # Past the replay window, an events channel resumes from the event log up to this many
    # events (more: resync).
    stream_resume_max_events: int = Field(default=10_000, ge=0)

    @field_validator("rate_limit_tiers")
    @classmethod
    def _tiers_positive(cls, tiers: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
        for name, limits in tiers.items():
            _check_limits(limits, f"rate_limit_tiers.{name}")
        return tiers

    @field_validator("ip_rate_limit")
    @classmethod
    def _ip_limit_positive(cls, limits: dict[str, int]) -> dict[str, int]:
        _check_limits(limits, "ip_rate_limit")
        return limits

    @field_validator("webhook_allow_private")
    @classmethod
    def _allow_private(cls, value: str) -> str:
        value = value.strip()
        if value.lower() in {"true", "false", "1", "0", "yes", "no", ""}:
            return value.lower()
        for cidr in value.split(","):
            ipaddress.ip_network(cidr.strip(), strict=False)
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _trusted_proxies(cls, value: str) -> str:
        from forecourt.http.client_ip import parse_networks

        parse_networks(value)  # ValueError names the entry
        return value.strip()

    @field_validator("plugin_trusted_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("plugin_trusted_keys")
    @classmethod
    def _trusted_keys(cls, keys: list[str]) -> list[str]:
        from forecourt.plugins.integrity import parse_public_key

        for key in keys:
            parse_public_key(key)  # ValueError names what is wrong
        return keys

    @property
    def plugins_dir(self) -> Path:
        """Where installed plugin versions are unpacked."""
        return self.data_dir / "plugins"

    @property
    def resolved_prometheus_dir(self) -> Path:
        """Where processes share their Prometheus values (multiprocess mode)."""
        return self.prometheus_dir or self.data_dir / "prometheus"

    @property
    def sandbox_dir(self) -> Path:
        """Where each sandboxed worker gets its private directory."""
        return self.data_dir / "sandbox"

    def ensure_data_dir(self) -> Path:
        """Create the data folder (mode 0700; as root 0710 with the sandbox's group), or
        tighten an existing one that grants more."""
        if os.geteuid() == 0:
            return ensure_private_dir(
                self.data_dir, ROOT_DATA_DIR_MODE, group=self.plugin_sandbox_gid, tighten=True
            )
        return ensure_private_dir(self.data_dir, PRIVATE_DIR_MODE, tighten=True)

    @cached_property
    def resolved_database_url(self) -> str:
        """The database URL; SQLite in ``data_dir`` when none is configured."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / SQLITE_FILE).resolve()}"

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")

    @cached_property
    def resolved_secret_key(self) -> bytes:
        """The server secret; generated once and stored with mode 0600 when unset."""
        if self.secret_key:
            return self.secret_key.encode()
        path = self.data_dir / SECRET_KEY_FILE
        if path.exists():
            return path.read_text().strip().encode()
        self.ensure_data_dir()
        value = secrets.token_urlsafe(48)
        write_private(path, value + "\n")
        return value.encode()


def write_private(path: Path, content: str) -> None:
    """Write ``content`` to ``path`` readable by the owner only (mode 0600), atomically.

    The file is created with that mode (whatever the umask), so it is never readable by
    anyone else, not even for a moment."""
    # mkstemp creates the file 0600 under a fresh name (O_EXCL): no other writer's, no
    # leftover's mode is inherited.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            os.fchmod(fh.fileno(), PRIVATE_FILE_MODE)
            fh.write(content)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def create_private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 unless it exists; an existing one is made 0600."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    except FileExistsError:
        chmod_private(path)
        return
    os.close(fd)
    os.chmod(path, PRIVATE_FILE_MODE)


def chmod_private(path: Path) -> None:
    """Make an existing file 0600 if it grants more (missing files are left alone)."""
    with contextlib.suppress(FileNotFoundError):
        if os.stat(path).st_mode & 0o177:
            os.chmod(path, PRIVATE_FILE_MODE)


def ensure_private_dir(
    path: Path, mode: int = PRIVATE_DIR_MODE, *, group: int | None = None, tighten: bool = False
) -> Path:
    """Create ``path`` (and missing parents, which get the same mode) with ``mode`` and,
    given, ``group``. With ``tighten``, an existing folder that grants more than ``mode``
    is brought down to it; otherwise an existing folder is left as it is."""
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):
            folder.mkdir(mode=mode)
            os.chmod(folder, mode)  # mkdir's mode is filtered by the umask
            if group is not None:
                os.chown(folder, -1, group)
    if tighten and path not in missing:
        st = os.stat(path)
        if st.st_mode & 0o777 & ~mode:
            os.chmod(path, st.st_mode & 0o777 & mode)
        if group is not None and st.st_gid != group and st.st_uid == os.geteuid():
            os.chown(path, -1, group)
            os.chmod(path, mode)
    return path


def _check_limits(limits: dict[str, int], field: str) -> None:
    from forecourt.errors import InvalidInput
    from forecourt.ratelimit.policy import validate_limits

    try:
        validate_limits(limits, field=field)
    except InvalidInput as exc:
        raise ValueError(f"{exc.field}: {exc.detail}") from None
