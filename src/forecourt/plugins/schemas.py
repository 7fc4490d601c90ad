"""Request and response bodies of /api/v1/plugins and /api/v1/plugin-instances."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema

from forecourt.schemas import JsonObject, JsonValue, StrictModel

Trust = Literal["builtin", "signed", "unsigned"]
TRUST_DESCRIPTION = (
    "builtin: shipped with Forecourt; signed: its signature verified with a trusted publisher "
    "key; unsigned: installed because this installation allows unsigned packages."
)


class PluginTypeOut(BaseModel):
    name: str
    description: str
    trigger: Literal["api", "event", "schedule"]
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]


class ProtectionOut(BaseModel):
    available: bool
    detail: str
    required: bool


class SandboxOut(BaseModel):
    require: Literal["available", "all"] = Field(
        description="The admin's choice (FORECOURT_PLUGIN_SANDBOX_REQUIRE): all: refuse to run "
        "plugins unless every protection is available; available: run with what there is."
    )
    runs_plugins: bool = Field(description="Whether plugins run here with that choice.")
    complete: bool
    missing: list[str]
    uid: int = Field(description="The user plugin code runs as when Forecourt is root.")
    protections: dict[str, ProtectionOut]


class PluginVersionOut(BaseModel):
    version: str
    sha256: str
    size_bytes: int
    signed: bool
    publisher: str | None
    trust: Trust = Field(description=TRUST_DESCRIPTION)
    status: Literal["ready", "invalid"]
    status_detail: str | None
    development_dir: str | None = Field(description="Watched for changes, when installed from one.")
    installed_at: datetime
    updated_at: datetime


class PluginOut(BaseModel):
    id: str
    name: str
    description: str
    type: str
    runtime: str
    category: str | None
    latest_version: str
    versions: list[str]
    enabled: bool = Field(description="Whether it runs for your tenant.")
    disabled_reason: str | None
    available_to_all: bool = Field(
        description="Available to every tenant, or only to those the operator listed."
    )
    builtin: bool
    signed: bool = Field(description="Whether the latest version is signed.")
    trust: Trust = Field(description=TRUST_DESCRIPTION)
    permissions: dict[str, Any] = Field(description="What the latest version may reach.")
    resources: dict[str, Any]
    installed_at: datetime


class WindowStats(BaseModel):
    executions: int
    ok: int
    failed: int
    error_rate: float | None
    p50_ms: float | None
    p95_ms: float | None
    by_status: dict[str, int]
    last_success_at: datetime | None
    last_failure_at: datetime | None


class PluginStats(BaseModel):
    plugin_id: str
    windows: dict[str, WindowStats] = Field(description="Keys: 1h, 24h, 7d.")


class PluginDetail(PluginOut):
    manifest: dict[str, Any] = Field(description="The latest version's manifest.")
    version_details: list[PluginVersionOut]
    instances: int = Field(description="Instances of this plugin in your tenant.")
    stats: PluginStats


class PluginUpdate(StrictModel):
    """Only the fields present change."""

    enabled: bool | None = Field(
        default=None,
        description="For your tenant alone. Disabling stops calls, events and schedules, and "
        "disables your instances of it.",
    )
    upgrade_to: str | None = Field(
        default=None,
        description="An installed version: your tenant's instances on older versions move to "
        "it, each configuration checked against its schema first (all or none).",
    )


class Availability(StrictModel):
    """Every tenant (``all_tenants``), or the tenants listed (ids or slugs)."""

    all_tenants: bool
    tenants: list[str] = Field(default_factory=list, max_length=1000)


class AvailabilityOut(BaseModel):
    plugin_id: str
    all_tenants: bool
    tenants: list[str] = Field(description="Slugs, when not available to all.")


PUBLIC_KEY_PATTERN = r"^ed25519:[A-Za-z0-9+/]{43}=$"


class PublisherKeyCreate(StrictModel):
    name: str = Field(min_length=1, max_length=200, description="Who publishes with it.")
    public_key: str = Field(
        pattern=PUBLIC_KEY_PATTERN,
        description="ed25519:<base64 of the raw 32-byte public key> (docs/plugins.md: "
        "signing packages).",
    )


class PublisherKeyOut(BaseModel):
    id: str | None = Field(description="None for a key of the configuration.")
    name: str
    public_key: str
    fingerprint: str = Field(description="SHA256:<base64> of the raw key.")
    source: Literal["database", "configuration"] = Field(
        description="database: added here, removable; configuration: "
        "FORECOURT_PLUGIN_TRUSTED_KEYS, changed only there."
    )
    created_at: datetime | None
    created_by: Literal["operator"] | None


class PluginUpdated(PluginDetail):
    upgraded_instances: list[str]


class InstanceCreate(StrictModel):
    plugin_id: str = Field(min_length=1, max_length=100)
    version: str | None = Field(default=None, description="Default: the newest installed.")
    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=2000)
    config: JsonObject = Field(default_factory=dict)
    event_types: list[str] = Field(
        default_factory=list,
        max_length=100,
        description="Hooks and alerts: which of the plugin's subscriptions this instance takes "
        "(exact or prefix.*); empty: all of them.",
    )
    enabled: bool = True


class InstanceUpdate(StrictModel):
    """Only the fields present change. Secrets sent back as ******** keep their value.

    Only ``description`` may be null; the document does not offer null for the others.
    """

    name: Annotated[str, Field(min_length=1, max_length=200)] | SkipJsonSchema[None] = None
    description: str | None = Field(default=None, max_length=2000)
    config: JsonObject | SkipJsonSchema[None] = None
    version: str | SkipJsonSchema[None] = Field(
        default=None, description="Move to another installed version."
    )
    event_types: Annotated[list[str], Field(max_length=100)] | SkipJsonSchema[None] = None
    enabled: bool | SkipJsonSchema[None] = None


class InstanceOut(BaseModel):
    id: str
    plugin_id: str
    version: str
    plugin_type: str
    name: str
    description: str
    config: dict[str, Any] = Field(description="Secrets read back as ********.")
    event_types: list[str]
    enabled: bool
    signed: bool
    trust: Trust = Field(description=TRUST_DESCRIPTION)
    next_run_at: datetime | None
    last_status: str | None
    created_at: datetime
    updated_at: datetime


class ExecuteRequest(StrictModel):
    input: JsonValue = Field(
        default_factory=dict, description="What the plugin's type takes; see GET /types."
    )


class ExecutionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    instance_id: str | None
    plugin_id: str
    version: str
    trigger: Literal["api", "event", "schedule"]
    attempt: int
    event_id: str | None
    started_at: datetime
    duration_ms: float
    status: Literal["ok", "error", "timeout", "killed", "refused"]
    error_class: str | None
    error_message: str | None
    logs: str = Field(description="What the plugin printed and logged, truncated.")
    cpu_ms: float | None
    max_rss_kib: int | None
    metrics: list[dict[str, Any]]


class ExecutionResult(ExecutionOut):
    output: Any = Field(description="The plugin's output when status is ok, else null.")
