"""Shapes shared by every capability's schemas."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from types import UnionType
from typing import Annotated, Any, Generic, TypeVar, Union, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    StrictInt,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)
from pydantic_core import PydanticCustomError

from forecourt.codec import ERROR_TYPE
from forecourt.codec import JsonObject as JsonObject
from forecourt.codec import JsonValue as JsonValue
from forecourt.ratelimit.policy import MAX_LIMIT as MAX_WINDOW_LIMIT
from forecourt.ratelimit.windows import STANDARD_WINDOWS
from forecourt.scopes import ALL_SCOPES

T = TypeVar("T")

# Names the document lists; the services check them and refuse an unknown one with a 422.
ScopeName = Annotated[str, WithJsonSchema({"type": "string", "enum": sorted(ALL_SCOPES)})]
WindowName = Annotated[str, WithJsonSchema({"type": "string", "enum": list(STANDARD_WINDOWS)})]
WindowLimit = Annotated[
    StrictInt, WithJsonSchema({"type": "integer", "minimum": 1, "maximum": MAX_WINDOW_LIMIT})
]

NUL = "\x00"
_NUMBER = re.compile(r"\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*")


def _timestamp_text(value: Any) -> Any:
    # pydantic would read a number as seconds since 1970 (a negative one before it).
    if isinstance(value, bool | int | float) or (
        isinstance(value, str) and _NUMBER.fullmatch(value)
    ):
        raise PydanticCustomError(
            "datetime_number", "a date-time is RFC 3339 text (2026-01-01T00:00:00Z), not a number"
        )
    return value


def _timestamp_in_range(value: datetime) -> datetime:
    if value.tzinfo is not None:
        try:
            value.astimezone(UTC)
        except OverflowError:
            raise PydanticCustomError(
                "datetime_range", "is outside years 1 to 9999 once converted to UTC"
            ) from None
    return value


Timestamp = Annotated[
    datetime, BeforeValidator(_timestamp_text), AfterValidator(_timestamp_in_range)
]
"""Every date-time of a request (body field or query parameter): RFC 3339 text, never a
number, and within years 1 to 9999 in UTC (``9999-12-31T23:59:59-14:00`` is not)."""


class Page(BaseModel, Generic[T]):
    """One page of a list; pass ``next_cursor`` as ``cursor`` for the next (null: no more)."""

    items: list[T]
    next_cursor: str | None


class StrictModel(BaseModel):
    """Request bodies: unknown fields are an error, not silently ignored.

    No text field holds the NUL character: PostgreSQL's text cannot store it, so it is
    refused here on every database. Fields of free JSON (``Any``, dicts) keep it, since JSON
    stores it escaped.
    """

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str):
            texts: tuple[Any, ...] | list[Any] = (value,)
        elif isinstance(value, list | tuple | set | frozenset):
            texts = [v for v in value if isinstance(v, str)]
        else:
            return value
        if any(NUL in text for text in texts) and (
            cls.model_fields[info.field_name or ""].annotation is not Any
        ):
            raise ValueError("cannot contain the NUL character (U+0000)")
        return value

    @field_validator("*", mode="before")
    @classmethod
    def _json_types(cls, value: Any, info: ValidationInfo) -> Any:
        """Numbers and booleans as JSON Schema has them (see ``json_typed``)."""
        field = cls.model_fields.get(info.field_name or "")
        return value if field is None else json_typed(field.annotation, value)


def json_typed(annotation: Any, value: Any, path: str = "") -> Any:
    """``value`` checked against the JSON type of ``annotation``, as the document states it.

    Pydantic's lax mode takes ``0`` and ``"yes"`` as booleans, ``false`` and ``"5"`` as
    integers, while its strict mode refuses ``225.0`` as an integer. JSON Schema's ``boolean``
    is only ``true``/``false``; its ``integer`` is any number without a fraction (``225.0``
    too), never a boolean or a string; its ``number`` is never a boolean or a string. Lists
    and string-keyed maps of these are checked item by item, and a refused item is named by
    its ``path`` inside the field (``rate_limits.minute``); other types are left as they are.
    """
    origin = get_origin(annotation)
    if origin is Annotated:
        return json_typed(get_args(annotation)[0], value, path)
    if origin in (Union, UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        if value is None or len(members) != 1:
            return value
        return json_typed(members[0], value, path)
    if annotation is bool:
        if not isinstance(value, bool):
            _refuse("must be true or false", path)
    elif annotation is int:
        if isinstance(value, bool) or not isinstance(value, int | float):
            _refuse("must be an integer", path)
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif annotation is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            _refuse("must be a number", path)
    elif origin in (list, set, frozenset) and isinstance(value, list):
        (item,) = get_args(annotation) or (Any,)
        return [json_typed(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
    elif origin is dict and isinstance(value, dict) and len(get_args(annotation)) == 2:
        item = get_args(annotation)[1]
        return {k: json_typed(item, v, f"{path}.{k}") for k, v in value.items()}
    return value


def _refuse(message: str, path: str) -> None:
    if not path:
        raise ValueError(message)
    # The codec's error type: the problem names the field and this path inside it.
    raise PydanticCustomError(ERROR_TYPE, message, {"path": path})
