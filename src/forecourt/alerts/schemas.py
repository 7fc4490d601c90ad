"""Request and response bodies of /api/v1/alerts and /api/v1/alert-rules."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic.json_schema import SkipJsonSchema

from forecourt.alerts.models import (
    MESSAGE_LENGTH,
    METRIC_NAME_LENGTH,
    RULE_NAME_LENGTH,
    SOURCE_LENGTH,
    TYPE_LENGTH,
)
from forecourt.metrics.schemas import LABEL_KEY_RE, MAX_LABEL_VALUE_CHARS, MAX_LABELS
from forecourt.metrics.schemas import NAME_PATTERN as METRIC_PATTERN
from forecourt.schemas import NUL, StrictModel, json_typed

Severity = Literal["critical", "high", "medium", "low"]
State = Literal["open", "acknowledged", "resolved"]
Condition = Literal["above", "below", "absent"]
RuleAggregation = Literal["avg", "min", "max", "sum", "last", "count"]

TYPE_PATTERN = rf"^[A-Za-z0-9][A-Za-z0-9_.:-]{{0,{TYPE_LENGTH - 1}}}$"
SOURCE_PATTERN = rf"^[A-Za-z0-9][A-Za-z0-9_.:/@-]{{0,{SOURCE_LENGTH - 1}}}$"
MAX_WINDOW_S = 86_400
MAX_FOR_S = 7 * 86_400
DEFAULT_SOURCE = "api"


def check_labels(labels: dict[str, str]) -> dict[str, str]:
    """``labels`` if each name and value is acceptable (a series' label rules, which alerts
    share); ValueError naming the first that is not."""
    for key, value in labels.items():
        if not LABEL_KEY_RE.match(key):
            raise ValueError(f"label name {key!r} does not match {LABEL_KEY_RE.pattern[:-2]}")
        if len(value) > MAX_LABEL_VALUE_CHARS or "\x00" in value:
            raise ValueError(
                f"label {key!r} is text of at most {MAX_LABEL_VALUE_CHARS} characters, without NUL"
            )
    return labels


Labels = Annotated[
    dict[str, str],
    Field(
        max_length=MAX_LABELS,
        examples=[{"host": "web-1"}],
        json_schema_extra={
            "propertyNames": {"pattern": "^" + LABEL_KEY_RE.pattern[:-2] + "$"},
            "additionalProperties": {
                "type": "string",
                "maxLength": MAX_LABEL_VALUE_CHARS,
                "pattern": "^[^\\x00]*$",
            },
        },
    ),
]


class AlertTrigger(StrictModel):
    """An alert to open; an unresolved one of the same type and labels counts a repeat."""

    type: str = Field(max_length=TYPE_LENGTH, pattern=TYPE_PATTERN, examples=["disk.full"])
    severity: Severity
    message: str = Field(default="", max_length=MESSAGE_LENGTH)
    source: str = Field(default=DEFAULT_SOURCE, max_length=SOURCE_LENGTH, pattern=SOURCE_PATTERN)
    labels: Labels = Field(default_factory=dict)

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        return check_labels(value)


class AlertOut(BaseModel):
    id: str
    type: str
    severity: Severity
    state: State
    message: str
    source: str
    labels: dict[str, Any]
    fingerprint: str = Field(description="SHA-256 of the type and labels: what repeats share.")
    count: int = Field(description="How many times it was triggered while unresolved.")
    rule_id: str | None = Field(description="The alert rule that opened it, if any.")
    first_seen_at: datetime
    last_seen_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    resolved_at: datetime | None
    resolved_by: str | None

    model_config = {"from_attributes": True}


class StateCounts(BaseModel):
    open: int
    acknowledged: int
    resolved: int
    total: int


class AlertSummary(BaseModel):
    """Counts of the alerts (within ``since``/``until`` when given), by state and by
    severity and state."""

    total: int
    by_state: StateCounts
    by_severity: dict[Severity, StateCounts]


class MetricQuery(StrictModel):
    """Which points a rule reads: every series of ``metric`` whose labels include ``labels``,
    aggregated over the last ``window_s`` seconds."""

    metric: str = Field(
        max_length=METRIC_NAME_LENGTH, pattern=METRIC_PATTERN, examples=["system.cpu.percent"]
    )
    labels: Labels = Field(default_factory=dict)
    aggregation: RuleAggregation = "avg"
    window_s: int = Field(default=300, ge=1, le=MAX_WINDOW_S)

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        return check_labels(value)


class _RuleFields(BaseModel):
    """A new rule's fields. Not a StrictModel: its checks of every field before validation
    would hide ``condition`` from the union's discriminator, so they are made here, field by
    field (the same checks)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=RULE_NAME_LENGTH, examples=["queue backlog"])
    description: str = Field(default="", max_length=MESSAGE_LENGTH)
    query: MetricQuery
    for_s: int = Field(
        default=0, ge=0, le=MAX_FOR_S, description="How long the condition must hold, seconds."
    )
    severity: Severity = "high"
    enabled: bool = True

    @field_validator("name", "description")
    @classmethod
    def _no_nul(cls, value: str) -> str:
        if NUL in value:
            raise ValueError("cannot contain the NUL character (U+0000)")
        return value

    @field_validator("for_s", "enabled", "threshold", mode="before", check_fields=False)
    @classmethod
    def _json_types(cls, value: Any, info: ValidationInfo) -> Any:
        return json_typed(cls.model_fields[info.field_name or ""].annotation, value)


class ThresholdRuleCreate(_RuleFields):
    """The aggregate compared with ``threshold``: the condition holds while it is above
    (or below) it; a window without points does not hold (but for ``count`` and ``sum``,
    which are then 0)."""

    condition: Literal["above", "below"]
    threshold: float = Field(allow_inf_nan=False)


class AbsentRuleCreate(_RuleFields):
    """The condition holds while the window has no point at all."""

    condition: Literal["absent"]


AlertRuleCreate = Annotated[
    ThresholdRuleCreate | AbsentRuleCreate, Field(discriminator="condition")
]
"""A new rule; a refused field of one is named after its condition (``above.threshold``)."""


class AlertRuleUpdate(StrictModel):
    """Only the fields present change; only ``threshold`` may be null (for ``absent``). A
    change that leaves ``above`` or ``below`` without a threshold, or ``absent`` with one,
    conflicts with the rule (409)."""

    name: (
        Annotated[str, Field(min_length=1, max_length=RULE_NAME_LENGTH)] | SkipJsonSchema[None]
    ) = None
    description: Annotated[str, Field(max_length=MESSAGE_LENGTH)] | SkipJsonSchema[None] = None
    query: MetricQuery | SkipJsonSchema[None] = None
    condition: Condition | SkipJsonSchema[None] = None
    threshold: float | None = Field(default=None, allow_inf_nan=False)
    for_s: Annotated[int, Field(ge=0, le=MAX_FOR_S)] | SkipJsonSchema[None] = None
    severity: Severity | SkipJsonSchema[None] = None
    enabled: bool | SkipJsonSchema[None] = None


class RuleStatus(BaseModel):
    evaluated_at: datetime | None
    last_value: float | None = Field(description="The aggregate at the last evaluation.")
    pending_since: datetime | None = Field(description="Since when the condition has held.")
    firing: bool
    alert_id: str | None = Field(description="The alert it opened, while firing.")


class AlertRuleOut(BaseModel):
    id: str
    name: str
    description: str
    query: MetricQuery
    condition: Condition
    threshold: float | None
    for_s: int
    severity: Severity
    enabled: bool
    created_at: datetime
    updated_at: datetime
    status: RuleStatus
