"""Cursor pagination over time-ordered ids, newest first.

A cursor is the opaque, URL-safe encoding of the last id of a page; the next page is every
row with a smaller id. Ids never repeat, so pages never overlap or skip rows.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select

from forecourt.errors import InvalidInput

DEFAULT_LIMIT = 50
MAX_LIMIT = 200


def encode_cursor(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode()).decode().rstrip("=")


def decode_key(cursor: str) -> str:
    """The key (any string) that ``encode_cursor`` encoded; InvalidInput otherwise."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        return base64.urlsafe_b64decode(padded.encode()).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidInput("The cursor is not one this API returned.", field="cursor") from None


def decode_cursor(cursor: str) -> str:
    """The id that ``encode_cursor`` encoded; InvalidInput for anything else."""
    value = decode_key(cursor)
    if not value or "_" not in value:
        raise InvalidInput("The cursor is not one this API returned.", field="cursor")
    return value


def paginate(stmt: Select[Any], id_column: Any, cursor: str | None, limit: int) -> Select[Any]:
    """``stmt`` restricted to the page after ``cursor``; fetches one extra row to detect more."""
    if cursor:
        stmt = stmt.where(id_column < decode_cursor(cursor))
    return stmt.order_by(id_column.desc()).limit(limit + 1)


def next_cursor(rows: Sequence[Any], limit: int) -> tuple[list[Any], str | None]:
    """The page and the cursor for the next one (None on the last page)."""
    page = list(rows[:limit])
    if len(rows) > limit and page:
        return page, encode_cursor(page[-1].id)
    return page, None
