"""Times given to the API: an instant needs its time zone.

``Timestamp`` (``forecourt.schemas``) reads RFC 3339 text but lets a time without an offset
through as a naive ``datetime``, which names no instant; the routes refuse it with
:func:`aware`, a 422 naming the parameter.
"""

from __future__ import annotations

from datetime import datetime
from typing import overload

from forecourt.errors import InvalidInput

ZONE_NEEDED = "Give a time zone, e.g. 2026-01-01T00:00:00Z."


@overload
def aware(value: datetime, field: str) -> datetime: ...
@overload
def aware(value: None, field: str) -> None: ...
def aware(value: datetime | None, field: str) -> datetime | None:
    """``value`` as it is; InvalidInput naming ``field`` when it has no time zone."""
    if value is not None and value.tzinfo is None:
        raise InvalidInput(ZONE_NEEDED, field=field)
    return value
