"""REST: /api/v1/events (publish, list, get) and /api/v1/event-types (the catalog)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Response, status
from sqlalchemy.ext.asyncio import AsyncSession

from forecourt import codec
from forecourt.errors import InvalidInput
from forecourt.events.catalog import TypeView
from forecourt.events.envelope import StoredEvent, envelope
from forecourt.events.schemas import (
    CatalogOut,
    CategoryOut,
    EventBatchOut,
    EventBatchPublish,
    EventOut,
    EventPublish,
    EventTypeCreate,
    EventTypeOut,
    EventTypeUpdate,
)
from forecourt.events.service import EventFilter, EventService
from forecourt.http.deps import DbSession, ForecourtDep, Paging, require
from forecourt.http.guard import GuardedRoute
from forecourt.principal import Principal
from forecourt.schemas import Page, Timestamp

_PRINTABLE = r"\x21-\x7e\xa1-\xac\xae-\xff"
IDEMPOTENCY_KEY_PATTERN = rf"^[{_PRINTABLE}]([ {_PRINTABLE}]{{0,198}}[{_PRINTABLE}])?$"
EventsRead = Annotated[Principal, Depends(require("events:read"))]
EventsPublish = Annotated[Principal, Depends(require("events:publish"))]
TypesRead = Annotated[Principal, Depends(require("event-types:read"))]
TypesWrite = Annotated[Principal, Depends(require("event-types:write"))]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description=(
            "A repeat within the idempotency window (24 h by default) returns the original "
            "event (200); the same key with a different body is refused (409)."
        ),
        # What the service takes: 1 to 200 printable (latin-1) characters; HTTP drops the
        # spaces around a header value, so none is at either end.
        json_schema_extra={"pattern": IDEMPOTENCY_KEY_PATTERN},
    ),
]
REPLAYED_HEADER = "Idempotent-Replayed"
JSON = "application/json"

events = APIRouter(route_class=GuardedRoute, prefix="/api/v1/events", tags=["events"])
event_types = APIRouter(
    route_class=GuardedRoute, prefix="/api/v1/event-types", tags=["event-types"]
)


def _service(fc: ForecourtDep, session: AsyncSession) -> EventService:
    return fc.events(session)


def _fields(event: StoredEvent) -> dict[str, Any]:
    return {**envelope(event), "event_id": event.id, "created_at": event.created_at}


def _out(event: StoredEvent) -> EventOut:
    return EventOut.model_validate(_fields(event))


def _type_out(view: TypeView) -> EventTypeOut:
    return EventTypeOut(
        name=view.name,
        category=view.category,
        description=view.description,
        schema_=view.schema,
        builtin=view.builtin,
        archived_at=view.archived_at,
        created_at=view.created_at,
        updated_at=view.updated_at,
    )


# The publish routes build their JSON directly (the fields of EventOut, as pydantic would
# write them) and open a session only when the type is not a built-in one: they are the hot
# path, and FastAPI's response validation and a session dependency cost more than the rest.


@events.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=EventOut,
    response_model_exclude_unset=True,
    responses={200: {"description": "A repeat: the original event, unchanged."}},
)
async def publish_event(
    body: EventPublish,
    actor: EventsPublish,
    fc: ForecourtDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Publish an event: stored, then delivered to every matching webhook endpoint.

    201 with the new event; 200 with the original when the Idempotency-Key or the event id
    repeats one already stored; 409 when an Idempotency-Key is reused for a different body.
    """
    async with fc.sessionmaker() as session:
        event, created = await _service(fc, session).publish(actor, body, idempotency_key)
    if created:
        return _json(_wire(event), status.HTTP_201_CREATED)
    return _json(_wire(event), status.HTTP_200_OK, {REPLAYED_HEADER: "true"})


@events.post(
    "/batch",
    status_code=status.HTTP_201_CREATED,
    response_model=EventBatchOut,
    response_model_exclude_unset=True,
    responses={200: {"description": "Every event was a repeat."}},
)
async def publish_batch(
    body: EventBatchPublish,
    actor: EventsPublish,
    fc: ForecourtDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Publish up to 100 events at once: all are stored, or none (422 names the item)."""
    async with fc.sessionmaker() as session:
        results = await _service(fc, session).publish_batch(actor, body.events, idempotency_key)
    created = sum(1 for _, c in results if c)
    out = {
        "events": [{**_wire(e), "duplicate": not c} for e, c in results],
        "created": created,
        "duplicates": len(results) - created,
    }
    return _json(out, status.HTTP_201_CREATED if created else status.HTTP_200_OK)


def _wire(event: StoredEvent) -> dict[str, Any]:
    """EventOut's fields as JSON values."""
    return {**envelope(event), "event_id": event.id, "created_at": _timestamp(event.created_at)}


def _timestamp(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def _json(content: Any, status_code: int, headers: dict[str, str] | None = None) -> Response:
    return Response(
        codec.dumps_stored(content), status_code=status_code, headers=headers, media_type=JSON
    )


@events.get("", response_model=Page[EventOut], response_model_exclude_unset=True)
async def list_events(
    actor: EventsRead,
    fc: ForecourtDep,
    session: DbSession,
    page: Paging,
    type: Annotated[str | None, Query(description="Exact, or a prefix: dashboard.*")] = None,
    since: Annotated[Timestamp | None, Query(description="Accepted at or after.")] = None,
    until: Annotated[Timestamp | None, Query(description="Accepted before.")] = None,
    subject: Annotated[str | None, Query(description="Exact subject.")] = None,
) -> Page[EventOut]:
    """The tenant's event log, newest first."""
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            raise InvalidInput("Give a time zone, e.g. 2026-01-01T00:00:00Z.", field=name)
    filters = EventFilter(type=type, since=since, until=until, subject=subject)
    rows, cursor = await _service(fc, session).page(actor, filters, page.cursor, page.limit)
    return Page[EventOut](items=[_out(e) for e in rows], next_cursor=cursor)


@events.get("/{event_id:path}", response_model=EventOut, response_model_exclude_unset=True)
async def get_event(
    event_id: str,
    actor: EventsRead,
    fc: ForecourtDep,
    session: DbSession,
    source: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=512,
            description="With a CloudEvents id: the event's source (two sources may use one "
            "id; without it, an id that several use is a 422).",
        ),
    ] = None,
) -> EventOut:
    """One event, by Forecourt's ``event_id`` or by its CloudEvents ``id`` (and ``source``)."""
    return _out(await _service(fc, session).get(actor, event_id, source))


@event_types.get("", response_model=CatalogOut, response_model_by_alias=True)
async def list_event_types(actor: TypesRead, fc: ForecourtDep, session: DbSession) -> CatalogOut:
    """Every type that can be published and subscribed to, grouped by category."""
    groups = await _service(fc, session).catalog(actor)
    return CatalogOut(
        categories=[
            CategoryOut(name=name, types=[_type_out(t) for t in types]) for name, types in groups
        ]
    )


@event_types.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=EventTypeOut,
    response_model_by_alias=True,
)
async def create_event_type(
    body: EventTypeCreate, actor: TypesWrite, fc: ForecourtDep, session: DbSession
) -> EventTypeOut:
    """Register a custom type, with an optional JSON Schema (Draft 2020-12) for its data."""
    return _type_out(await _service(fc, session).create_type(actor, body))


@event_types.get("/{name}", response_model=EventTypeOut, response_model_by_alias=True)
async def get_event_type(
    name: str, actor: TypesRead, fc: ForecourtDep, session: DbSession
) -> EventTypeOut:
    return _type_out(await _service(fc, session).get_type(actor, name))


@event_types.patch("/{name}", response_model=EventTypeOut, response_model_by_alias=True)
async def update_event_type(
    name: str,
    body: EventTypeUpdate,
    actor: TypesWrite,
    fc: ForecourtDep,
    session: DbSession,
) -> EventTypeOut:
    """Change a custom type's category, description or schema; built-in types are fixed."""
    return _type_out(await _service(fc, session).update_type(actor, name, body))


@event_types.delete("/{name}", response_model=EventTypeOut, response_model_by_alias=True)
async def archive_event_type(
    name: str, actor: TypesWrite, fc: ForecourtDep, session: DbSession
) -> EventTypeOut:
    """Archive a custom type: still listed, no longer publishable. PATCH archived=false
    restores it."""
    return _type_out(await _service(fc, session).archive_type(actor, name))


routers = (events, event_types)
