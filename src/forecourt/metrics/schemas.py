"""Request and response bodies of /api/v1/metrics, and the rules a series' name and labels
follow (one place, read by the API, the in-process API and the collectors' hand-off)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from functools import lru_cache
from typing import Annotated, Any, Literal, NotRequired

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)
from pydantic_core import PydanticCustomError
from typing_extensions import TypedDict

from forecourt.metrics.models import NAME_LENGTH

# A name: letters, digits, ``_``, ``.`` and ``:``, starting with a letter or ``_``.
NAME_RE = re.compile(rf"[A-Za-z_][A-Za-z0-9_.:]{{0,{NAME_LENGTH - 1}}}\Z")
LABEL_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\Z")
MAX_LABELS = 16
MAX_LABEL_VALUE_CHARS = 256
# A source given through the API: not ``forecourt`` and not a plugin instance's id, which
# only Forecourt itself and the collectors write as.
SOURCE_RE = re.compile(r"[a-z][a-z0-9_.-]{0,63}\Z")
RESERVED_SOURCES = ("forecourt",)
RESERVED_SOURCE_PREFIX = "pin_"
DEFAULT_API_SOURCE = "app"
# ``labels`` of a query: ``key:value`` pairs separated by commas.
_PAIR = rf"[A-Za-z_][A-Za-z0-9_]{{0,63}}:[^,\x00]{{0,{MAX_LABEL_VALUE_CHARS}}}"
LABELS_QUERY_PATTERN = rf"^{_PAIR}(,{_PAIR}){{0,{MAX_LABELS - 1}}}$"
NAME_PATTERN = "^" + NAME_RE.pattern[:-2] + "$"
LabelName = Annotated[
    str, StringConstraints(strict=True, pattern="^" + LABEL_KEY_RE.pattern[:-2] + "$")
]
LabelValue = Annotated[
    str,
    StringConstraints(strict=True, max_length=MAX_LABEL_VALUE_CHARS, pattern=r"^[^\x00]*$"),
]
MAX_POINTS_PER_REQUEST = 5_000
TIME_LENGTH = 64  # characters of a point's time

Aggregation = Literal["avg", "min", "max", "sum", "last", "count", "p95"]
AGGREGATIONS: tuple[str, ...] = ("avg", "min", "max", "sum", "last", "count", "p95")


def name_problem(name: object) -> str | None:
    """Why ``name`` is not a series name, or None."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        return (
            f"a metric name matches {NAME_RE.pattern[:-2]} (letters, digits, _ . :, "
            f"at most {NAME_LENGTH} characters)"
        )
    return None


def labels_problem(labels: object) -> str | None:
    """Why ``labels`` are not a series' labels, or None."""
    if not isinstance(labels, dict):
        return "labels are an object of text values"
    if len(labels) > MAX_LABELS:
        return f"at most {MAX_LABELS} labels"
    for key, value in labels.items():
        if not isinstance(key, str) or not LABEL_KEY_RE.match(key):
            return f"label name {key!r} does not match {LABEL_KEY_RE.pattern[:-2]}"
        if not isinstance(value, str) or len(value) > MAX_LABEL_VALUE_CHARS or "\x00" in value:
            return f"label {key!r} is text of at most {MAX_LABEL_VALUE_CHARS} characters"
    return None


@lru_cache(maxsize=8192)  # a batch repeats its times across its series
def point_time_s(text: str) -> float:
    """A point's RFC 3339 time (with a zone) in epoch seconds; PydanticCustomError saying
    what is wrong otherwise. A number is not a time: as text it either does not parse or
    has no zone."""
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise PydanticCustomError(
            "point_time", "a time is RFC 3339 text with a zone, e.g. 2026-01-01T00:00:00Z"
        ) from None
    if at.tzinfo is None or at.utcoffset() is None:
        raise PydanticCustomError("point_time", "Give a time zone, e.g. 2026-01-01T00:00:00Z.")
    try:
        return at.astimezone(UTC).timestamp()
    except (OverflowError, ValueError):
        raise PydanticCustomError(
            "point_time", "is outside years 1 to 9999 once converted to UTC"
        ) from None


def _checked_time(text: str | None) -> str | None:
    if text is not None:
        point_time_s(text)
    return text


class PointIn(TypedDict):
    """One point: a series (name and labels) and a finite value at a time (default: now).

    Checked by the schema's own constraints alone (no per-field Python validators, and a
    plain dict rather than a model instance per point: a request carries thousands of
    points): strict types (a value is a JSON number, never a string or a boolean), patterns
    for the name and label names, no NUL in label values. ``time`` is text, read by the
    route (RFC 3339 with a zone, within raw retention)."""

    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]

    name: Annotated[
        str,
        Field(
            strict=True,
            min_length=1,
            max_length=NAME_LENGTH,
            pattern=NAME_PATTERN,
            examples=["orders.checkout.seconds"],
        ),
    ]
    value: Annotated[float, Field(strict=True, allow_inf_nan=False, examples=[0.42])]
    labels: NotRequired[
        Annotated[
            dict[LabelName, LabelValue],
            Field(
                max_length=MAX_LABELS,
                strict=True,
                examples=[{"region": "eu"}],
                # Pydantic lists the key pattern under patternProperties alone: no other key.
                json_schema_extra={"additionalProperties": False},
            ),
        ]
    ]
    time: NotRequired[
        Annotated[
            str | None,
            Field(
                strict=True,
                max_length=TIME_LENGTH,
                description="When it was measured (RFC 3339 with a zone); default: now.",
                json_schema_extra={"format": "date-time"},
            ),
            AfterValidator(_checked_time),
        ]
    ]


class PointsIn(BaseModel):
    """Points to write, as one source (default ``app``)."""

    model_config = ConfigDict(extra="forbid")

    points: list[PointIn] = Field(min_length=1, max_length=MAX_POINTS_PER_REQUEST, strict=True)
    source: str = Field(
        default=DEFAULT_API_SOURCE,
        strict=True,
        min_length=1,
        max_length=64,
        json_schema_extra={"pattern": "^" + SOURCE_RE.pattern[:-2] + "$"},
    )

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        if (
            not SOURCE_RE.match(value)
            or value in RESERVED_SOURCES
            or value.startswith(RESERVED_SOURCE_PREFIX)
        ):
            raise ValueError(
                f"a source matches {SOURCE_RE.pattern[:-2]} and is neither 'forecourt' "
                f"nor a plugin instance's id ({RESERVED_SOURCE_PREFIX}...)"
            )
        return value


class RefusedSeries(BaseModel):
    name: str
    labels: dict[str, str]
    points: int
    reason: str


class WriteOut(BaseModel):
    """What a write did: points accepted into the write buffer (stored within a flush
    interval), and series refused with their reason (their points are not stored)."""

    accepted: int
    refused: list[RefusedSeries]


class SeriesOut(BaseModel):
    id: int
    name: str
    labels: dict[str, Any]
    source: str
    first_point_at: str | None = Field(description="RFC 3339; null before the first flush.")
    last_point_at: str | None
    last_value: float | None


class LatestPoint(BaseModel):
    series_id: int
    instance_id: str
    name: str
    labels: dict[str, Any]
    time: str
    value: float


class LatestOut(BaseModel):
    plugin_id: str
    points: list[LatestPoint]


class SeriesPoints(BaseModel):
    id: int
    name: str
    labels: dict[str, Any]
    source: str
    points: list[tuple[str, float]] = Field(
        description="[time (RFC 3339, the step's start), value] pairs, oldest first."
    )


class QueryOut(BaseModel):
    name: str
    agg: Aggregation
    step: int
    resolution: Literal["raw", "1m", "1h"] = Field(description="What the points were read from.")
    approximate: bool = Field(
        description="p95 read from rollups (bucket averages), past raw retention."
    )
    series: list[SeriesPoints]
