"""The CloudEvents 1.0 envelope, as stored, returned by the API and posted to receivers."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

SPEC_VERSION = "1.0"
# The ``events`` columns an envelope is made of (plus ``id``, the row's own).
ENVELOPE_COLUMNS = (
    "id",
    "ce_id",
    "source",
    "type",
    "time",
    "datacontenttype",
    "tenant_id",
    "severity",
    "data",
    "subject",
)


class Enveloped(Protocol):
    """What an envelope is made of: a stored ``Event``, or an event about to be stored."""

    @property
    def ce_id(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def time(self) -> datetime: ...
    @property
    def datacontenttype(self) -> str: ...
    @property
    def tenant_id(self) -> str: ...
    @property
    def severity(self) -> str: ...
    @property
    def data(self) -> Any: ...
    @property
    def subject(self) -> str | None: ...


class StoredEvent(Enveloped, Protocol):
    """An event as stored: an ``Event`` row, or the values of one just inserted."""

    @property
    def id(self) -> str: ...
    @property
    def created_at(self) -> datetime: ...


def envelope(event: Enveloped) -> dict[str, Any]:
    """CloudEvents attributes (structured mode) plus ``tenant`` and ``severity``."""
    body: dict[str, Any] = {
        "specversion": SPEC_VERSION,
        "id": event.ce_id,
        "source": event.source,
        "type": event.type,
        "time": event.time.isoformat().replace("+00:00", "Z"),
        "datacontenttype": event.datacontenttype,
        "tenant": event.tenant_id,
        "severity": event.severity,
        "data": event.data,
    }
    if event.subject is not None:
        body["subject"] = event.subject
    return body
