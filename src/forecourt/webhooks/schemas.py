"""Request and response bodies of /api/v1/webhooks and /api/v1/deliveries."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt
from pydantic.json_schema import SkipJsonSchema

from forecourt.schemas import JsonObject, StrictModel

MAX_TIMEOUT_S = 60.0
DEFAULT_TIMEOUT_S = 15.0
DEFAULT_MAX_ATTEMPTS = 8
MAX_ATTEMPTS = 20
MAX_OVERLAP_S = 7 * 86_400


class RetryPolicy(StrictModel):
    """``exponential``: the default schedule (immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h,
    10 h, ±20 %); ``linear``: every ``interval_s``; ``none``: one attempt only."""

    kind: Literal["exponential", "linear", "none"] = "exponential"
    max_attempts: StrictInt = Field(default=DEFAULT_MAX_ATTEMPTS, ge=1, le=MAX_ATTEMPTS)
    interval_s: StrictInt = Field(default=60, ge=1, le=86_400)


class EndpointCreate(StrictModel):
    url: str = Field(min_length=1, max_length=2048)
    description: str = Field(default="", max_length=2000)
    event_types: list[str] = Field(default_factory=list, max_length=200)
    headers: dict[str, str] = Field(default_factory=dict, max_length=50)
    timeout_s: float = Field(default=DEFAULT_TIMEOUT_S, gt=0, le=MAX_TIMEOUT_S)
    retry_policy: RetryPolicy = Field(default_factory=RetryPolicy)
    rate_limit_per_s: StrictInt | None = Field(default=None, ge=1, le=100_000)
    metadata: JsonObject = Field(default_factory=dict)
    secret: str | None = Field(default=None, description="whsec_…; generated when absent.")
    enabled: bool = True


class EndpointUpdate(StrictModel):
    """Only the fields present change; only ``rate_limit_per_s`` may be null (no limit)."""

    url: Annotated[str, Field(min_length=1, max_length=2048)] | SkipJsonSchema[None] = None
    description: Annotated[str, Field(max_length=2000)] | SkipJsonSchema[None] = None
    event_types: Annotated[list[str], Field(max_length=200)] | SkipJsonSchema[None] = None
    headers: Annotated[dict[str, str], Field(max_length=50)] | SkipJsonSchema[None] = None
    timeout_s: Annotated[float, Field(gt=0, le=MAX_TIMEOUT_S)] | SkipJsonSchema[None] = None
    retry_policy: RetryPolicy | SkipJsonSchema[None] = None
    rate_limit_per_s: StrictInt | None = Field(default=None, ge=1, le=100_000)
    metadata: JsonObject | SkipJsonSchema[None] = None
    enabled: bool | SkipJsonSchema[None] = None


class SecretRotate(StrictModel):
    secret: str | None = Field(
        default=None, description="The new whsec_ secret; generated if absent."
    )
    overlap_s: StrictInt | None = Field(
        default=None,
        ge=0,
        le=MAX_OVERLAP_S,
        description="How long the old secret keeps signing too; 24 h by default.",
    )


class EndpointOut(BaseModel):
    """Without ``webhooks:secrets``, header values and the URL's credentials and query string
    read ``***``."""

    id: str
    url: str
    description: str
    event_types: list[str]
    headers: dict[str, str]
    timeout_s: float
    retry_policy: RetryPolicy
    rate_limit_per_s: int | None
    metadata: dict[str, Any]
    enabled: bool
    disabled_reason: str | None
    disabled_at: datetime | None
    previous_secret_expires_at: datetime | None
    created_at: datetime
    updated_at: datetime


SECRET_WITHHELD_NOTE = (
    "The signing secret (whsec_…), shown here only to a caller holding webhooks:secrets"
    " (admin implies it) and only when Forecourt generated it. null when the caller does not"
    " hold that scope (someone who does reads it with GET /api/v1/webhooks/{id}/secret) or"
    " when the request gave the secret itself (it is never echoed)."
)


class EndpointCreated(EndpointOut):
    secret: str | None = Field(description=SECRET_WITHHELD_NOTE)


class SecretOut(BaseModel):
    secret: str | None = Field(
        description="The signing secret (whsec_…); null when the request gave it (never echoed)."
    )
    previous_secret_expires_at: datetime | None


class AttemptOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    attempt_no: int
    started_at: datetime
    duration_ms: int
    status_code: int | None
    response_excerpt: str | None
    error_class: str | None
    error_message: str | None


class DeliveryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    endpoint_id: str
    event_id: str
    event_type: str
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


class DeliveryDetail(DeliveryOut):
    attempt_log: list[AttemptOut]


class RecoverOut(BaseModel):
    requeued: int


class WindowStats(BaseModel):
    attempts: int
    succeeded: int
    failed: int
    success_rate: float | None
    p50_ms: float | None
    p95_ms: float | None
    last_success_at: datetime | None
    last_failure_at: datetime | None


class HourAttempts(BaseModel):
    start: datetime = Field(description="The hour's start; attempts that started within it.")
    succeeded: int
    failed: int


class EndpointStats(BaseModel):
    endpoint_id: str
    windows: dict[str, WindowStats] = Field(description="Keys: 1h, 24h, 7d.")
    pending: int
    hourly: list[HourAttempts] = Field(
        description="Attempts by clock hour over the last 24 hours, oldest first, every hour"
        " listed (none: zeros)."
    )
