"""The CloudEvents 1.0 envelope, as stored, returned by the API and posted to receivers."""

from __future__ import annotations

from typing import Any

from forecourt.events.models import Event

SPEC_VERSION = "1.0"


def envelope(event: Event) -> dict[str, Any]:
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
