"""Request and response bodies of /api/v1/events and /api/v1/event-types."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema

from forecourt.events.catalog import CATEGORY_RE, NAME_RE
from forecourt.events.models import EVENT_ID_LENGTH, TYPE_LENGTH
from forecourt.schemas import JsonObject, JsonValue, StrictModel, Timestamp

Severity = Literal["info", "warning", "error", "critical"]
MAX_BATCH = 100


class EventPublish(StrictModel):
    """One event to publish. Only ``type`` is required; ``data`` is the payload (any JSON)."""

    type: str = Field(
        min_length=1,
        max_length=TYPE_LENGTH,
        examples=["dashboard.created"],
        json_schema_extra={"pattern": NAME_RE.pattern},
    )
    data: JsonValue = Field(default=None, examples=[{"dashboard_id": "d-42", "title": "Sales"}])
    id: str | None = Field(
        default=None,
        min_length=1,
        max_length=EVENT_ID_LENGTH,
        description="Your CloudEvents id; repeating it returns the original event.",
    )
    source: str | None = Field(
        default=None,
        min_length=1,
        max_length=512,
        description='CloudEvents source (URI-reference); default "/forecourt/<tenant id>".',
    )
    subject: str | None = Field(default=None, min_length=1, max_length=512)
    time: Timestamp | None = Field(default=None, description="When it happened; default: now.")
    severity: Severity = "info"
    specversion: Literal["1.0"] | None = Field(
        default=None, description="Accepted so a whole CloudEvent can be posted as is."
    )
    datacontenttype: Literal["application/json"] | None = None


class EventBatchPublish(StrictModel):
    events: list[EventPublish] = Field(min_length=1, max_length=MAX_BATCH)


class EventOut(BaseModel):
    """The CloudEvents 1.0 envelope (structured mode) plus tenant, severity and our own id."""

    specversion: str
    id: str = Field(description="The CloudEvents id: yours, or event_id when you gave none.")
    source: str
    type: str
    time: datetime
    datacontenttype: str
    subject: str | None = Field(default=None, description="Absent when not given.")
    data: Any = None
    tenant: str
    severity: Severity
    event_id: str = Field(description="Forecourt's id of the stored event.")
    created_at: datetime = Field(description="When Forecourt accepted the event.")


class BatchEventOut(EventOut):
    duplicate: bool = Field(description="True when this repeats an event already stored.")


class EventBatchOut(BaseModel):
    events: list[BatchEventOut]
    created: int
    duplicates: int


class EventTypeCreate(StrictModel):
    name: str = Field(
        min_length=1,
        max_length=TYPE_LENGTH,
        examples=["invoice.paid"],
        json_schema_extra={"pattern": NAME_RE.pattern},
    )
    category: str | None = Field(
        default=None,
        description="Default: the first segment of the name (invoice.paid: invoice).",
        json_schema_extra={"pattern": CATEGORY_RE.pattern},
    )
    description: str = Field(default="", max_length=2000)
    schema_: JsonObject | None = Field(
        default=None,
        alias="schema",
        description="A JSON Schema (Draft 2020-12) that published data must match.",
    )


class EventTypeUpdate(StrictModel):
    """Only the fields present change; ``schema: null`` removes the schema."""

    category: str | SkipJsonSchema[None] = None
    description: str | None = Field(default=None, max_length=2000)
    schema_: JsonObject | None = Field(default=None, alias="schema")
    archived: bool | None = Field(
        default=None, description="false restores an archived type; true archives it."
    )


class EventTypeOut(BaseModel):
    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True)

    name: str
    category: str
    description: str
    schema_: dict[str, Any] | None = Field(alias="schema")
    builtin: bool
    archived_at: datetime | None = Field(description="Archived types cannot be published to.")
    created_at: datetime | None = Field(description="Null for built-in types.")
    updated_at: datetime | None


class CategoryOut(BaseModel):
    name: str
    types: list[EventTypeOut]


class CatalogOut(BaseModel):
    categories: list[CategoryOut]
