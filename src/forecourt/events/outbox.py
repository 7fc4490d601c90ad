"""Writing events into a transaction: validation, deduplication, the event row and its
deliveries, and hooks that run after the commit. ``EventService.publish``, ``emit`` and
``publish_in`` all go through here.

``publish_in`` is the transactional outbox, for host apps on SQLAlchemy that share
Forecourt's database: the event and its webhook deliveries are written in the host's own
transaction, so they commit with the host's change or not at all. The delivery workers pick
the rows up by polling (or at once, when ``on_committed`` wakes them)::

    async with sessionmaker() as session, session.begin():
        session.add(order)
        await publish_in(session, tenant_id=tenant, type="order.created", data={"id": order.id})

Same validation as ``POST /api/v1/events`` (known, not archived type; JSON Schema; size cap;
severity), raising ``forecourt.errors.InvalidInput`` / ``PayloadTooLarge``. A repeated ``id``
of the same ``source`` (CloudEvents: source + id name one event) or a repeated
``idempotency_key`` returns the stored original without writing anything; two concurrent
transactions publishing the same one both pass the check, and the second fails with
IntegrityError (the unique constraints) at its flush or commit.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, event, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from forecourt import codec
from forecourt.db import bulk
from forecourt.db.base import utcnow
from forecourt.errors import Conflict, InvalidInput, PayloadTooLarge
from forecourt.events import catalog
from forecourt.events.catalog import TypeView
from forecourt.events.envelope import StoredEvent, envelope
from forecourt.events.models import EVENT_ID_LENGTH, Event
from forecourt.ids import new_id
from forecourt.plugins import routing
from forecourt.webhooks import fanout
from forecourt.webhooks.targets import Target

log = logging.getLogger("forecourt.events")

SEVERITIES = ("info", "warning", "error", "critical")
CONTENT_TYPE = "application/json"
DEFAULT_MAX_EVENT_BYTES = 262_144
DEFAULT_IDEMPOTENCY_WINDOW_S = 86_400
IDEMPOTENCY_KEY_LENGTH = 255  # the column
MAX_SOURCE_CHARS = 512
MAX_SUBJECT_CHARS = 512
# session.info key: a callable(deliveries) run after the commit of events emitted in it.
EMITTED_HOOK = "forecourt.events.emitted"
# A session's info key: called with the events it stored, once committed (the live streams).
STREAMED_HOOK = "forecourt.events.streamed"
_PENDING_HOOKS = "forecourt.events.pending_hooks"

OnPublished = Callable[[int], object]
"""Called after a commit that stored events, with the number of deliveries queued."""

_hook_tasks: set[asyncio.Task[Any]] = set()
_EVENTS = cast(Table, Event.__table__)


@dataclass(slots=True)
class Draft:
    """A validated event, not stored yet; ``event()`` builds a fresh row for each attempt."""

    id: str
    tenant_id: str
    ce_id: str
    explicit_id: bool
    type: str
    source: str
    subject: str | None
    time: datetime
    explicit_time: bool
    severity: str
    data: Any
    idempotency_key: str | None
    size_bytes: int
    datacontenttype: str = CONTENT_TYPE
    body: bytes = b""  # the envelope as JSON: what webhooks post

    def row(self, created_at: datetime) -> dict[str, Any]:
        """The ``events`` row, for a Core insert."""
        return {
            "id": self.id,
            "tenant_id": self.tenant_id,
            "ce_id": self.ce_id,
            "idempotency_key": self.idempotency_key,
            "source": self.source,
            "type": self.type,
            "subject": self.subject,
            "time": self.time,
            "datacontenttype": self.datacontenttype,
            "data": self.data,
            "severity": self.severity,
            "size_bytes": self.size_bytes,
            "created_at": created_at,
        }

    def event(self, created_at: datetime | None = None) -> Event:
        """The row as an ``Event`` object (not added to any session)."""
        return Event(**self.row(created_at or utcnow()))


@dataclass(frozen=True, slots=True)
class NewEvent:
    """A just-inserted event, as its row's values: building an ``Event`` object for each
    would cost more than the rest of a publish does."""

    id: str
    tenant_id: str
    ce_id: str
    idempotency_key: str | None
    source: str
    type: str
    subject: str | None
    time: datetime
    datacontenttype: str
    data: Any
    severity: str
    size_bytes: int
    created_at: datetime

    def event(self) -> Event:
        """The same as an ``Event`` object (not added to any session)."""
        return Event(**{name: getattr(self, name) for name in self.__slots__})


async def lookup_type(
    session: AsyncSession, tenant_id: str, name: str, field: str = "type"
) -> TypeView:
    """The publishable type ``name``; InvalidInput when unknown or archived."""
    view = await catalog.resolve(session, tenant_id, name)
    if view is None:
        raise InvalidInput(
            f"Unknown event type {name!r}; see GET /api/v1/event-types, or register it there.",
            field=field,
        )
    if not view.publishable:
        raise InvalidInput(f"The event type {name!r} is archived.", field=field)
    return view


def prepare(
    view: TypeView,
    tenant_id: str,
    *,
    data: Any,
    id: str | None = None,
    source: str | None = None,
    subject: str | None = None,
    time: datetime | None = None,
    severity: str = "info",
    idempotency_key: str | None = None,
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    normalize: bool = False,
    checked: bool = False,
) -> Draft:
    """Validate one event against its type and the limits. ``normalize`` turns ``data`` into
    plain JSON values first (for callers that may pass datetimes, tuples, ...); ``checked``
    says ``data`` already passed ``codec.check`` (a request's ``JsonValue``)."""
    if severity not in SEVERITIES:
        raise InvalidInput(f"severity is one of {', '.join(SEVERITIES)}.", field="severity")
    _check_text(id, "id", EVENT_ID_LENGTH)
    _check_text(source, "source", MAX_SOURCE_CHARS)
    _check_text(subject, "subject", MAX_SUBJECT_CHARS)
    _check_text(idempotency_key, "idempotency_key", IDEMPOTENCY_KEY_LENGTH)
    if normalize:
        data = codec.normalize(data, field="data")
    elif not checked:
        codec.check(data, field="data")
    if time is not None and time.tzinfo is None:
        time = time.replace(tzinfo=UTC)
    event_id = new_id("evt")
    draft = Draft(
        id=event_id,
        tenant_id=tenant_id,
        ce_id=id or event_id,
        explicit_id=id is not None,
        type=view.name,
        source=source or f"/forecourt/{tenant_id}",
        subject=subject,
        time=time.astimezone(UTC) if time is not None else utcnow(),
        explicit_time=time is not None,
        severity=severity,
        data=data,
        idempotency_key=idempotency_key,
        size_bytes=0,
    )
    body = codec.dumps(envelope(draft), field="data")
    size = len(body)
    if size > max_event_bytes:
        raise PayloadTooLarge(
            f"The event is {size} bytes as JSON; the cap is {max_event_bytes}.",
            size_bytes=size,
            max_event_bytes=max_event_bytes,
        )
    # After the size cap: the schema's work grows with the data.
    catalog.validate_data(view.schema, data)
    draft.size_bytes = size
    draft.body = body
    return draft


@dataclass(slots=True)
class Plan:
    """What storing some drafts comes to: the answer per draft (``(event, created)``;
    duplicates: the original) and the rows still to insert."""

    results: list[tuple[StoredEvent, bool]]
    events: list[dict[str, Any]]
    deliveries: list[dict[str, Any]]
    # Per delivery row (same order): its endpoint and the body to post, for a worker of this
    # process that takes the delivery over straight away (see ``EventWriter``).
    targets: list[tuple[Target, bytes]] = field(default_factory=list)


EndpointCache = dict[tuple[str, str], list[Target]]
"""Matching endpoints by (tenant, type), shared by the plans of one transaction."""


async def store(
    session: AsyncSession, drafts: Sequence[Draft], idempotency_window_s: int
) -> tuple[list[tuple[Event, bool]], int]:
    """Add the new events and their deliveries to ``session``'s transaction (not committed).

    Returns ``(event, created)`` per draft (duplicates: the original) and the number of
    deliveries queued. IntegrityError means a concurrent duplicate won: roll back, call again.
    """
    planned = await plan(session, drafts, idempotency_window_s)
    await write(session, [planned])
    streamed = session.info.get(STREAMED_HOOK)
    new_events = [row for row, new in planned.results if new]
    if streamed is not None and new_events:
        after_commit(session, 0, lambda _deliveries: streamed(new_events))
    results = [
        (stored.event() if isinstance(stored, NewEvent) else cast(Event, stored), created)
        for stored, created in planned.results
    ]
    return results, len(planned.deliveries)


async def plan(
    session: AsyncSession,
    drafts: Sequence[Draft],
    idempotency_window_s: int,
    endpoints: EndpointCache | None = None,
) -> Plan:
    """Deduplicate ``drafts`` (of one tenant) against the stored events and work out the rows
    to insert; nothing is inserted yet (``write`` does). Raises Conflict, having changed
    nothing, when an Idempotency-Key was used for a different request."""
    if not drafts:
        return Plan([], [], [])
    tenant_id = drafts[0].tenant_id
    by_key: dict[str, Event] = {}
    by_ce: dict[tuple[str, str], Event] = {}  # by (source, id): CloudEvents' identity
    keys = [d.idempotency_key for d in drafts if d.idempotency_key]
    if keys:
        rows = await session.scalars(
            select(Event).where(Event.tenant_id == tenant_id, Event.idempotency_key.in_(keys))
        )
        by_key = {e.idempotency_key: e for e in rows if e.idempotency_key}
    ce_ids = [d.ce_id for d in drafts if d.explicit_id]
    if ce_ids:
        rows = await session.scalars(
            select(Event).where(Event.tenant_id == tenant_id, Event.ce_id.in_(ce_ids))
        )
        by_ce = {(e.source, e.ce_id): e for e in rows}

    now = utcnow()
    cutoff = now - timedelta(seconds=idempotency_window_s)
    results: list[tuple[StoredEvent, bool]] = []
    expired: list[Event] = []
    new: list[tuple[NewEvent, dict[str, Any]]] = []
    for draft in drafts:
        original: Event | None = None
        if draft.idempotency_key and (row := by_key.get(draft.idempotency_key)) is not None:
            if row.created_at < cutoff:
                expired.append(row)
            elif not same_request(row, draft):
                raise Conflict(
                    "This Idempotency-Key was used for a different request; "
                    "use a new key for a new event.",
                    event_id=row.id,
                )
            else:
                original = row
        if original is None and draft.explicit_id:
            original = by_ce.get((draft.source, draft.ce_id))
        if original is not None:
            results.append((original, False))
            continue
        values = draft.row(now)
        created = NewEvent(**values)
        new.append((created, values))
        results.append((created, True))
    if expired:
        for row in expired:
            row.idempotency_key = None  # past the window: the key may name a new event
        await session.flush()
    endpoints = {} if endpoints is None else endpoints
    deliveries: list[dict[str, Any]] = []
    targets: list[tuple[Target, bytes]] = []
    bodies = {draft.id: draft.body for draft in drafts}
    for created, _ in new:
        matching = endpoints.get((tenant_id, created.type))
        if matching is None:
            matching = await fanout.matching_endpoints(session, tenant_id, created.type)
            endpoints[(tenant_id, created.type)] = matching
        ids = [endpoint.id for endpoint in matching]
        deliveries += fanout.delivery_rows(tenant_id, created.id, created.type, ids, now)
        body = bodies[created.id]
        targets += [(endpoint, body) for endpoint in matching]
    return Plan(results, [values for _, values in new], deliveries, targets)


async def write(session: AsyncSession, plans: Sequence[Plan]) -> None:
    """Insert the rows of ``plans`` in ``session``'s transaction: two statements for all."""
    # Core inserts: the unit of work would cost more than the database does here.
    events = [row for p in plans for row in p.events]
    if events:
        await bulk.insert_rows(await session.connection(), _EVENTS, events)
        await routing.enqueue(session, events)
    await fanout.insert_deliveries(session, [row for p in plans for row in p.deliveries])


def same_request(row: Event, draft: Draft) -> bool:
    """Whether ``draft`` repeats the request that stored ``row`` (for Idempotency-Key)."""
    row_explicit_id = row.ce_id != row.id
    return (
        row.type == draft.type
        and row.source == draft.source
        and row.subject == draft.subject
        and row.severity == draft.severity
        and row_explicit_id == draft.explicit_id
        and (not draft.explicit_id or row.ce_id == draft.ce_id)
        and (not draft.explicit_time or row.time == draft.time)
        and canonical(row.data) == canonical(draft.data)
    )


def canonical(value: Any) -> bytes:
    """JSON with sorted keys: equal for equal JSON values, and 1 differs from 1.0 and true
    (a row stored before the codec's limits too)."""
    return codec.dumps_stored(value, sort_keys=True)


def after_commit(session: AsyncSession, deliveries: int, hook: OnPublished | None) -> None:
    """Call ``hook(deliveries)`` once the caller's transaction commits; never if it rolls back."""
    if hook is None:
        return
    sync = session.sync_session
    pending: list[tuple[OnPublished, int]] | None = sync.info.get(_PENDING_HOOKS)
    if pending is None:
        pending = sync.info[_PENDING_HOOKS] = []
        event.listen(sync, "after_commit", _run_pending)
        event.listen(sync, "after_rollback", _drop_pending)
    pending.append((hook, deliveries))


async def publish_in(
    session: AsyncSession,
    *,
    tenant_id: str,
    type: str,
    data: Any,
    id: str | None = None,
    subject: str | None = None,
    severity: str = "info",
    source: str | None = None,
    time: datetime | None = None,
    idempotency_key: str | None = None,
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    idempotency_window_s: int = DEFAULT_IDEMPOTENCY_WINDOW_S,
    on_committed: OnPublished | None = None,
) -> Event:
    """Add an event and its deliveries to ``session``'s transaction; never commits.

    Returns the new event (flushed), or the original one for a repeated ``id`` or
    ``idempotency_key``. ``on_committed(deliveries)`` (default: the session's
    ``info[EMITTED_HOOK]``) runs after the caller commits, never after a rollback.
    """
    view = await lookup_type(session, tenant_id, type)
    draft = prepare(
        view,
        tenant_id,
        data=data,
        id=id,
        source=source,
        subject=subject,
        time=time,
        severity=severity,
        idempotency_key=idempotency_key,
        max_event_bytes=max_event_bytes,
        normalize=True,
    )
    results, deliveries = await store(session, [draft], idempotency_window_s)
    stored, created = results[0]
    if created:
        after_commit(session, deliveries, on_committed or session.info.get(EMITTED_HOOK))
    return stored


def _check_text(value: str | None, field: str, max_chars: int) -> None:
    if value is None:
        return
    if not 1 <= len(value) <= max_chars:
        raise InvalidInput(f"{field} is 1 to {max_chars} characters.", field=field)
    if "\x00" in value:  # PostgreSQL's text cannot hold it; refused on every database
        raise InvalidInput(f"{field} cannot contain the NUL character (U+0000).", field=field)


def _run_pending(session: Session) -> None:
    pending: list[tuple[OnPublished, int]] = session.info.get(_PENDING_HOOKS) or []
    session.info[_PENDING_HOOKS] = []
    for hook, deliveries in pending:
        try:
            result = hook(deliveries)
            if inspect.isawaitable(result):
                task = asyncio.get_running_loop().create_task(_await(result))
                _hook_tasks.add(task)
                task.add_done_callback(_hook_tasks.discard)
        except Exception:
            log.exception("after-commit event hook failed")


def _drop_pending(session: Session) -> None:
    session.info[_PENDING_HOOKS] = []


async def _await(awaitable: Any) -> None:
    try:
        await awaitable
    except Exception:
        log.exception("after-commit event hook failed")
