"""Request and response bodies of /api/v1/keys."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema

from forecourt.schemas import ScopeName, StrictModel, Timestamp, WindowLimit, WindowName

MAX_GRACE_S = 30 * 86_400


class KeyCreate(StrictModel):
    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=2000)
    scopes: list[ScopeName] = Field(min_length=1, max_length=64)
    tier: str | None = Field(
        default=None, description="Rate-limit tier; the default tier if unset."
    )
    # JSON integers: true or "10" are not limits (lax mode would coerce them), 10.0 is.
    rate_limits: dict[WindowName, WindowLimit] = Field(
        default_factory=dict,
        description='Per-key overrides of the tier, e.g. {"minute": 100, "second": 5}.',
    )
    expires_at: Timestamp | None = None
    environment: Literal["live", "test"] | None = None


class KeyUpdate(StrictModel):
    """Only the fields present are changed; ``expires_at: null`` removes the expiry."""

    name: Annotated[str, Field(min_length=1, max_length=200)] | SkipJsonSchema[None] = None
    description: str | None = Field(default=None, max_length=2000)
    scopes: (
        Annotated[list[ScopeName], Field(min_length=1, max_length=64)] | SkipJsonSchema[None]
    ) = None
    tier: str | None = None
    rate_limits: dict[WindowName, WindowLimit] | None = None
    expires_at: Timestamp | None = None


class KeyRotate(StrictModel):
    grace_period_s: int | None = Field(
        default=None,
        ge=0,
        le=MAX_GRACE_S,
        description="How long the old secret keeps working; 24 h by default.",
    )


class KeyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    description: str
    prefix: str
    environment: str
    scopes: list[str]
    tier: str
    rate_limits: dict[str, int]
    status: Literal["active", "expired", "revoked"]
    expires_at: datetime | None
    previous_expires_at: datetime | None
    created_by: str | None
    created_at: datetime
    updated_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class KeyCreated(KeyOut):
    key: str = Field(description="The full key. Shown this once; store it now.")


class UsageTotals(BaseModel):
    """Requests, by status class; ``rate_limited`` counts the 429s among them."""

    requests: int
    status_2xx: int
    status_3xx: int
    status_4xx: int
    status_5xx: int
    rate_limited: int


class UsagePoint(UsageTotals):
    start: datetime


class KeyUsage(BaseModel):
    key_id: str
    last_used_at: datetime | None
    minute: list[UsagePoint] = Field(description="Per minute, the last hour.")
    hour: list[UsagePoint] = Field(description="Per hour, the last 24 hours.")
    day: list[UsagePoint] = Field(description="Per day, the last 30 days.")
    totals_30d: UsageTotals


class TierOut(BaseModel):
    name: str
    limits: dict[str, int] = Field(description="Requests allowed per window, e.g. minute: 60.")


class TiersOut(BaseModel):
    """The installation's rate-limit tiers (FORECOURT_RATE_LIMIT_TIERS)."""

    default: str = Field(description="The tier of a key created without one.")
    items: list[TierOut]
