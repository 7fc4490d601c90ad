"""Shapes shared by every capability's schemas."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

T = TypeVar("T")

NUL = "\x00"


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
