"""The event-type catalog: built-in types, a tenant's custom types, and their JSON Schemas.

Built-in types are virtual: they live in this module, are the same for every tenant, and are
merged with the tenant's stored custom types (``event_types`` rows) whenever the catalog is
read. Nothing is seeded, so there is no first-use write to race on, a new release's types
appear everywhere at once, and publishing a built-in type needs no query. Built-ins cannot be
changed or archived; custom types carry an optional JSON Schema (Draft 2020-12) that
published data is validated against.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, best_match
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from forecourt.errors import InvalidInput
from forecourt.events.models import TYPE_LENGTH, EventType

NAME_RE = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)+$")
CATEGORY_RE = re.compile(r"^[a-z0-9_]{1,64}$")
SYSTEM_CATEGORY = "forecourt"
MAX_ERROR_MESSAGE_CHARS = 300
VALIDATOR_CACHE_SIZE = 256


@dataclass(frozen=True, slots=True)
class TypeView:
    """One entry of a tenant's catalog, built-in or custom."""

    name: str
    category: str
    description: str
    schema: dict[str, Any] | None = None
    builtin: bool = True
    id: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    archived_at: datetime | None = None

    @property
    def publishable(self) -> bool:
        return self.archived_at is None


def _types(category: str, descriptions: dict[str, str]) -> list[TypeView]:
    return [
        TypeView(f"{category}.{action}", category, text) for action, text in descriptions.items()
    ]


BUILTIN_TYPES: tuple[TypeView, ...] = (
    *_types(
        "data_source",
        {
            "created": "A data source was added.",
            "updated": "A data source's settings changed.",
            "deleted": "A data source was removed.",
        },
    ),
    *_types(
        "query",
        {
            "created": "A saved query was created.",
            "updated": "A saved query changed.",
            "deleted": "A saved query was deleted.",
            "executed": "A query ran; data usually carries its duration and row count.",
        },
    ),
    *_types(
        "dashboard",
        {
            "created": "A dashboard was created.",
            "updated": "A dashboard changed.",
            "deleted": "A dashboard was deleted.",
            "viewed": "Someone opened a dashboard.",
        },
    ),
    *_types(
        "alert",
        {
            "triggered": "An alert's condition became true.",
            "resolved": "An alert's condition is no longer true.",
        },
    ),
    *_types("export", {"completed": "An export finished and its file is ready."}),
    *_types(
        "user",
        {
            "created": "A user was added.",
            "updated": "A user's profile or role changed.",
            "deleted": "A user was removed.",
        },
    ),
    # Forecourt's own events, emitted into the same stream.
    TypeView("key.created", SYSTEM_CATEGORY, "An API key was created."),
    TypeView("key.rotated", SYSTEM_CATEGORY, "An API key got a new secret."),
    TypeView("key.revoked", SYSTEM_CATEGORY, "An API key was revoked."),
    TypeView(
        "endpoint.disabled",
        SYSTEM_CATEGORY,
        "A webhook endpoint was disabled, by hand or after failing for too long.",
    ),
    TypeView("endpoint.enabled", SYSTEM_CATEGORY, "A webhook endpoint was enabled again."),
    TypeView("webhook.test", SYSTEM_CATEGORY, "A test delivery asked for by a user."),
    TypeView("plugin.failed", SYSTEM_CATEGORY, "A plugin run failed or timed out."),
    TypeView("plugin.execution_completed", SYSTEM_CATEGORY, "A plugin run finished successfully."),
    TypeView("plugin.installed", SYSTEM_CATEGORY, "A plugin version was installed."),
    TypeView("plugin.uninstalled", SYSTEM_CATEGORY, "A plugin version was uninstalled."),
    TypeView(
        "connection.revoked",
        SYSTEM_CATEGORY,
        "An OAuth connection was revoked or its refresh token stopped working.",
    ),
)
BUILTINS: dict[str, TypeView] = {t.name: t for t in BUILTIN_TYPES}
# Built-in categories first, in this order; custom categories follow by name.
CATEGORY_ORDER: tuple[str, ...] = tuple(dict.fromkeys(t.category for t in BUILTIN_TYPES))


def custom_view(row: EventType) -> TypeView:
    return TypeView(
        name=row.name,
        category=row.category,
        description=row.description,
        schema=row.schema,
        builtin=False,
        id=row.id,
        created_at=row.created_at,
        updated_at=row.updated_at,
        archived_at=row.archived_at,
    )


async def resolve(session: AsyncSession, tenant_id: str, name: str) -> TypeView | None:
    """The built-in or custom type ``name`` of the tenant (archived included), or None."""
    builtin = BUILTINS.get(name)
    if builtin is not None:
        return builtin
    row = await session.scalar(
        select(EventType).where(EventType.tenant_id == tenant_id, EventType.name == name)
    )
    return None if row is None else custom_view(row)


async def all_types(session: AsyncSession, tenant_id: str) -> list[TypeView]:
    """Every type of the tenant: the built-ins, then its custom types (archived included)."""
    rows = await session.scalars(select(EventType).where(EventType.tenant_id == tenant_id))
    return [*BUILTIN_TYPES, *(custom_view(r) for r in rows)]


def grouped(types: Iterable[TypeView]) -> list[tuple[str, list[TypeView]]]:
    """Types by category: built-in categories in their order, then custom ones by name."""
    groups: dict[str, list[TypeView]] = {}
    for view in types:
        groups.setdefault(view.category, []).append(view)
    rank = {name: i for i, name in enumerate(CATEGORY_ORDER)}
    ordered = sorted(groups, key=lambda c: (rank.get(c, len(rank)), c))
    return [(c, sorted(groups[c], key=lambda t: t.name)) for c in ordered]


def check_name(name: str, field: str = "name") -> str:
    if len(name) > TYPE_LENGTH or not NAME_RE.match(name):
        raise InvalidInput(
            "Type names are dot-separated lowercase words (a-z, 0-9, _), at least two, "
            f"at most {TYPE_LENGTH} characters: e.g. invoice.paid.",
            field=field,
        )
    return name


def check_category(category: str, field: str = "category") -> str:
    if not CATEGORY_RE.match(category):
        raise InvalidInput(
            "Categories are one lowercase word (a-z, 0-9, _), at most 64 characters.",
            field=field,
        )
    if category == SYSTEM_CATEGORY:
        raise InvalidInput(f"The {SYSTEM_CATEGORY!r} category is reserved.", field=field)
    return category


def check_schema(schema: Any, field: str = "schema") -> dict[str, Any]:
    """``schema`` if it is a valid Draft 2020-12 JSON Schema object; InvalidInput otherwise."""
    if not isinstance(schema, dict):
        raise InvalidInput("A schema is a JSON object (a JSON Schema, Draft 2020-12).", field=field)
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        where = "".join(f"/{p}" for p in exc.absolute_path)
        raise InvalidInput(
            f"Not a valid JSON Schema at '{where or '/'}': {_short(exc.message)}", field=field
        ) from None
    return schema


@functools.lru_cache(maxsize=VALIDATOR_CACHE_SIZE)
def _validator(schema_json: bytes) -> Draft202012Validator:
    return Draft202012Validator(
        orjson.loads(schema_json), format_checker=Draft202012Validator.FORMAT_CHECKER
    )


def validate_data(schema: dict[str, Any] | None, data: Any, field: str = "data") -> None:
    """InvalidInput naming ``data`` and the JSON path of the most relevant error."""
    if schema is None:
        return
    try:
        validator = _validator(orjson.dumps(schema, option=orjson.OPT_SORT_KEYS))
    except orjson.JSONEncodeError:  # e.g. an integer past 64 bits: not cacheable by its bytes
        validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    error = best_match(validator.iter_errors(data))
    if error is None:
        return
    path = "".join(f".{p}" for p in error.absolute_path)
    raise InvalidInput(
        f"data does not match the type's schema at {error.json_path}: {_short(error.message)}",
        field=field + path,
        json_path=error.json_path,
    )


def _short(message: str) -> str:
    if len(message) <= MAX_ERROR_MESSAGE_CHARS:
        return message
    return message[: MAX_ERROR_MESSAGE_CHARS - 1] + "…"
