"""Publish events, read the event log, manage the catalog, and prune what is past retention.

Publishing writes the event and one pending delivery per matching webhook endpoint in one
transaction, then commits, then calls ``on_published(deliveries)`` (the delivery workers'
wake-up). So an accepted event always has its deliveries, and a failed write leaves neither.

Deduplication, per tenant:

- ``Idempotency-Key``: a repeat within ``idempotency_window_s`` returns the original event
  (``created`` False) if the request is the same (type, data, subject, severity, source, and
  id and time when given); reusing a key for a different request is a Conflict (409), as in
  the IETF Idempotency-Key draft and Stripe's API. After the window the key is released and
  names a new event. In a batch, item ``i`` uses the key ``<key>:<i>``.
- The CloudEvents ``id``: an event whose source and id are already stored returns the
  original, whatever its data (CloudEvents: the same source + id is the same event). Two
  sources may use the same id. Unique per (tenant, source, id) for as long as the original is
  kept (the retention period).
- Concurrent duplicates: both run the lookup, both insert; the unique constraints let one
  commit, the other gets IntegrityError, rolls back and repeats the lookup, finding the winner.

Sources: an event published without ``source`` gets ``/forecourt/<tenant id>``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, and_, delete, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from forecourt.audit import service as audit
from forecourt.db.base import utcnow
from forecourt.errors import Conflict, InvalidInput, NotFound, PayloadTooLarge
from forecourt.events import catalog
from forecourt.events.catalog import TypeView
from forecourt.events.envelope import StoredEvent
from forecourt.events.models import Event, EventType
from forecourt.events.outbox import (
    DEFAULT_IDEMPOTENCY_WINDOW_S,
    DEFAULT_MAX_EVENT_BYTES,
    EMITTED_HOOK,
    Draft,
    OnPublished,
    after_commit,
    lookup_type,
    prepare,
    store,
)
from forecourt.events.schemas import MAX_BATCH, EventPublish, EventTypeCreate, EventTypeUpdate
from forecourt.ids import new_id
from forecourt.observability.instruments import events_published
from forecourt.pagination import next_cursor, paginate
from forecourt.principal import Principal

if TYPE_CHECKING:
    from forecourt.core import Forecourt
    from forecourt.events.ingest import EventWriter
    from forecourt.settings import Settings

log = logging.getLogger("forecourt.events")

MAX_IDEMPOTENCY_KEY_CHARS = 200  # the column holds 255: room for a batch's ":<index>"
RETENTION_INTERVAL_S = 3600.0
PRUNE_BATCH = 1000
MAX_SAME_ID = 20  # events read to tell whether an id names one event or several


@dataclass(frozen=True, slots=True)
class EventConfig:
    """What the event service needs from the settings, and the after-commit callback."""

    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    idempotency_window_s: int = DEFAULT_IDEMPOTENCY_WINDOW_S
    on_published: OnPublished | None = None
    # Publishes go through it (group commit) when set; otherwise each commits on its own.
    writer: EventWriter | None = None

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        on_published: OnPublished | None = None,
        writer: EventWriter | None = None,
    ) -> EventConfig:
        return cls(settings.max_event_bytes, settings.idempotency_window_s, on_published, writer)


@dataclass(frozen=True, slots=True)
class EventFilter:
    """``type``: exact, ``a.*`` (a.b, a.b.c) or ``*``; ``since``/``until``: accepted at."""

    type: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    subject: str | None = None


async def emit(
    session: AsyncSession,
    tenant_id: str,
    type: str,
    data: Any,
    subject: str | None = None,
    severity: str = "info",
    *,
    hook: OnPublished | None = None,
) -> Event:
    """Forecourt's own event (``key.created``, ``endpoint.disabled``, ...), added with its
    deliveries to the caller's transaction; not committed. After the caller commits,
    ``hook`` (default: the session's ``info[EMITTED_HOOK]``, if set) gets the number of
    deliveries queued; if the caller rolls back, nothing was stored and no hook runs."""
    view = await lookup_type(session, tenant_id, type)
    draft = prepare(view, tenant_id, data=data, subject=subject, severity=severity, normalize=True)
    results, deliveries = await store(session, [draft], DEFAULT_IDEMPOTENCY_WINDOW_S)
    after_commit(session, deliveries, hook or session.info.get(EMITTED_HOOK))
    return results[0][0]


# -- the service ---------------------------------------------------------------------------


class EventService:
    def __init__(self, session: AsyncSession, config: EventConfig) -> None:
        self.session = session
        self.config = config

    async def publish(
        self, actor: Principal, data: EventPublish, idempotency_key: str | None = None
    ) -> tuple[StoredEvent, bool]:
        """The stored event and True; or the original and False when this is a repeat."""
        key = _check_key(idempotency_key)
        view = await lookup_type(self.session, actor.tenant_id, data.type)
        draft = self._prepare(view, actor, data, key)
        return (await self._commit([draft]))[0]

    async def publish_batch(
        self, actor: Principal, items: Sequence[EventPublish], idempotency_key: str | None = None
    ) -> list[tuple[StoredEvent, bool]]:
        """Up to 100 events, all or none: any invalid item (``events.<i>.<field>``) refuses
        the whole batch; the valid batch is stored in one transaction."""
        if not 1 <= len(items) <= MAX_BATCH:
            raise InvalidInput(f"A batch holds 1 to {MAX_BATCH} events.", field="events")
        key = _check_key(idempotency_key)
        views: dict[str, TypeView] = {}
        drafts: list[Draft] = []
        seen_ids: dict[tuple[str, str], int] = {}  # (source, id): index
        for i, item in enumerate(items):
            try:
                if item.type not in views:
                    views[item.type] = await lookup_type(self.session, actor.tenant_id, item.type)
                drafts.append(
                    self._prepare(views[item.type], actor, item, f"{key}:{i}" if key else None)
                )
            except InvalidInput as exc:
                extra = {k: v for k, v in exc.extra.items() if k != "errors"}
                raise InvalidInput(exc.detail, field=f"events.{i}.{exc.field}", **extra) from None
            except PayloadTooLarge as exc:
                raise PayloadTooLarge(f"events.{i}: {exc.detail}", index=i, **exc.extra) from None
            if item.id is not None:
                identity = (drafts[-1].source, item.id)
                if identity in seen_ids:
                    raise InvalidInput(
                        f"The source and id repeat those of events.{seen_ids[identity]}.",
                        field=f"events.{i}.id",
                    )
                seen_ids[identity] = i
        return await self._commit(drafts)

    async def emit(
        self,
        tenant_id: str,
        type: str,
        data: Any,
        subject: str | None = None,
        severity: str = "info",
    ) -> Event:
        """The module's ``emit`` (the caller commits) with ``on_published`` as its hook."""
        return await emit(
            self.session, tenant_id, type, data, subject, severity, hook=self.config.on_published
        )

    async def page(
        self, actor: Principal, filters: EventFilter, cursor: str | None, limit: int
    ) -> tuple[list[Event], str | None]:
        """Events of the caller's tenant, newest first."""
        stmt = select(Event).where(Event.tenant_id == actor.tenant_id)
        if filters.type and filters.type != "*":
            if filters.type.endswith(".*"):
                stmt = stmt.where(Event.type.startswith(filters.type[:-1], autoescape=True))
            else:
                stmt = stmt.where(Event.type == filters.type)
        if filters.since is not None:
            stmt = stmt.where(Event.created_at >= filters.since)
        if filters.until is not None:
            stmt = stmt.where(Event.created_at < filters.until)
        if filters.subject is not None:
            stmt = stmt.where(Event.subject == filters.subject)
        rows = (await self.session.scalars(paginate(stmt, Event.id, cursor, limit))).all()
        return next_cursor(rows, limit)

    async def get(self, actor: Principal, event_id: str, source: str | None = None) -> Event:
        """By Forecourt's id, or by CloudEvents id (and ``source``, which tells apart the
        events of two sources that use the same id). Forecourt's id wins if both match; an
        id that several sources use, without ``source``, is an InvalidInput."""
        by_ce_id = Event.ce_id == event_id
        if source is not None:
            by_ce_id &= Event.source == source
        match = (Event.id == event_id) | by_ce_id
        rows = (
            await self.session.scalars(
                select(Event).where(Event.tenant_id == actor.tenant_id, match).limit(MAX_SAME_ID)
            )
        ).all()
        if not rows:
            raise NotFound(f"No event {event_id!r}.")
        own = next((e for e in rows if e.id == event_id), None)
        if own is not None:
            return own
        if len(rows) > 1:
            raise InvalidInput(
                f"Events of {'several' if len(rows) == MAX_SAME_ID else len(rows)} sources "
                "have this id; give the source to choose one.",
                field="source",
            )
        return rows[0]

    # -- the catalog ---------------------------------------------------------------------

    async def catalog(self, actor: Principal) -> list[tuple[str, list[TypeView]]]:
        """Every type of the tenant (archived included), grouped by category."""
        return catalog.grouped(await catalog.all_types(self.session, actor.tenant_id))

    async def get_type(self, actor: Principal, name: str) -> TypeView:
        view = await catalog.resolve(self.session, actor.tenant_id, name)
        if view is None:
            raise NotFound(f"No event type {name!r}.")
        return view

    async def create_type(self, actor: Principal, data: EventTypeCreate) -> TypeView:
        name = catalog.check_name(data.name)
        if name in catalog.BUILTINS:
            raise Conflict(f"{name!r} is a built-in type.")
        category = catalog.check_category(data.category or name.split(".", 1)[0])
        schema = None if data.schema_ is None else catalog.check_schema(data.schema_)
        existing = await self._row(actor, name)
        if existing is not None:
            state = " (archived: PATCH archived=false restores it)" if existing.archived_at else ""
            raise Conflict(f"The type {name!r} exists{state}.")
        now = utcnow()
        row = EventType(
            id=new_id("etp"),
            tenant_id=actor.tenant_id,
            name=name,
            category=category,
            description=data.description,
            schema=schema,
            builtin=False,
            created_at=now,
            updated_at=now,
        )
        self.session.add(row)
        audit.record(
            self.session, actor, "event_type.created", "event_type", row.id, after=_summary(row)
        )
        try:
            await self.session.commit()
        except IntegrityError:
            await self.session.rollback()
            raise Conflict(f"The type {name!r} exists.") from None
        return catalog.custom_view(row)

    async def update_type(self, actor: Principal, name: str, data: EventTypeUpdate) -> TypeView:
        """Change category, description, schema (null removes it), or archive / restore."""
        row = await self._custom(actor, name)
        before = _summary(row)
        fields = data.model_fields_set
        if "category" in fields:
            if data.category is None:
                raise InvalidInput("The category cannot be null.", field="category")
            row.category = catalog.check_category(data.category)
        if "description" in fields:
            row.description = data.description or ""
        if "schema_" in fields:
            row.schema = None if data.schema_ is None else catalog.check_schema(data.schema_)
        if "archived" in fields and data.archived is not None:
            if data.archived and row.archived_at is None:
                row.archived_at = utcnow()
            elif not data.archived:
                row.archived_at = None
        row.updated_at = utcnow()
        audit.record(
            self.session,
            actor,
            "event_type.updated",
            "event_type",
            row.id,
            before=before,
            after=_summary(row),
        )
        await self.session.commit()
        return catalog.custom_view(row)

    async def archive_type(self, actor: Principal, name: str) -> TypeView:
        """Archived types stay listed (with archived_at) but can no longer be published to."""
        row = await self._custom(actor, name)
        if row.archived_at is None:
            before = _summary(row)
            row.archived_at = row.updated_at = utcnow()
            audit.record(
                self.session,
                actor,
                "event_type.archived",
                "event_type",
                row.id,
                before=before,
                after=_summary(row),
            )
            await self.session.commit()
        return catalog.custom_view(row)

    # -- internals -----------------------------------------------------------------------

    def _prepare(
        self, view: TypeView, actor: Principal, item: EventPublish, key: str | None
    ) -> Draft:
        return prepare(
            view,
            actor.tenant_id,
            data=item.data,
            id=item.id,
            source=item.source,
            subject=item.subject,
            time=item.time,
            severity=item.severity,
            idempotency_key=key,
            max_event_bytes=self.config.max_event_bytes,
            checked=True,  # EventPublish.data is a JsonValue
        )

    async def _commit(self, drafts: Sequence[Draft]) -> list[tuple[StoredEvent, bool]]:
        """Store and commit; a lost race with a concurrent duplicate is retried once."""
        if self.config.writer is not None:
            session = self.session
            if not (session.new or session.dirty or session.deleted):
                # The type lookup's connection goes back to the pool while the group commit
                # runs: requests waiting for it must not hold every connection it needs.
                await session.close()
            return await self.config.writer.write(drafts)
        for attempt in (1, 2):
            try:
                results, deliveries = await store(
                    self.session, drafts, self.config.idempotency_window_s
                )
                await self.session.commit()
            except IntegrityError:
                await self.session.rollback()
                if attempt == 2:
                    raise Conflict("A concurrent request published the same event.") from None
                continue
            except Exception:
                await self.session.rollback()
                raise
            events_published(sum(created for _, created in results))
            if any(created for _, created in results):
                await _call_hook(self.config.on_published, deliveries)
            return list[tuple[StoredEvent, bool]](results)
        raise AssertionError("unreachable")

    async def _row(self, actor: Principal, name: str) -> EventType | None:
        return await self.session.scalar(
            select(EventType).where(EventType.tenant_id == actor.tenant_id, EventType.name == name)
        )

    async def _custom(self, actor: Principal, name: str) -> EventType:
        if name in catalog.BUILTINS:
            raise Conflict(f"{name!r} is a built-in type; built-in types cannot be changed.")
        row = await self._row(actor, name)
        if row is None:
            raise NotFound(f"No event type {name!r}.")
        return row


# -- reading the log in order -----------------------------------------------------------


async def accepted_after(
    session: AsyncSession,
    tenant_id: str,
    types: Sequence[str] | None,
    *,
    since: datetime,
    until: datetime,
    after: tuple[datetime, str] | None = None,
    limit: int = 500,
) -> list[Event]:
    """Events of ``tenant_id`` accepted at or after ``since`` and before ``until``, in the
    order they were accepted (``created_at``, then id), of any of the type patterns
    ``types`` (exact, ``a.*`` or ``*``; None: every type). ``after`` (an event's
    ``created_at`` and id) continues a previous page past that event. For the live streams:
    a client that resumes past their replay window gets its events from here."""
    stmt = _accepted(select(Event), tenant_id, types, since, until)
    if after is not None:
        at, event_id = after
        stmt = stmt.where(
            or_(Event.created_at > at, and_(Event.created_at == at, Event.id > event_id))
        )
    stmt = stmt.order_by(Event.created_at, Event.id).limit(limit)
    return list((await session.scalars(stmt)).all())


async def count_accepted(
    session: AsyncSession,
    tenant_id: str,
    types: Sequence[str] | None,
    *,
    since: datetime,
    until: datetime,
    limit: int,
) -> int:
    """How many events ``accepted_after`` would give from ``since`` (all pages), counting
    at most ``limit``."""
    stmt = _accepted(select(Event.id), tenant_id, types, since, until)
    counted = await session.scalar(select(func.count()).select_from(stmt.limit(limit).subquery()))
    return int(counted or 0)


def _accepted(
    stmt: Select[Any],
    tenant_id: str,
    types: Sequence[str] | None,
    since: datetime,
    until: datetime,
) -> Select[Any]:
    stmt = stmt.where(
        Event.tenant_id == tenant_id, Event.created_at >= since, Event.created_at < until
    )
    if types is None or "*" in types:
        return stmt
    return stmt.where(
        or_(
            *(
                Event.type.startswith(t[:-1], autoescape=True)
                if t.endswith(".*")
                else Event.type == t
                for t in types
            )
        )
    )


# -- retention -----------------------------------------------------------------------------


async def prune(session: AsyncSession, older_than: datetime, *, batch: int = PRUNE_BATCH) -> int:
    """Delete events accepted before ``older_than`` (every tenant), ``batch`` per
    transaction, committing each; their deliveries and attempts go with them (ON DELETE
    CASCADE). Returns how many events were deleted."""
    total = 0
    while True:
        ids = (
            await session.scalars(
                select(Event.id).where(Event.created_at < older_than).limit(batch)
            )
        ).all()
        if not ids:
            return total
        await session.execute(delete(Event).where(Event.id.in_(ids)))
        await session.commit()
        total += len(ids)
        if len(ids) < batch:
            return total


async def run_retention(fc: Forecourt, interval_s: float = RETENTION_INTERVAL_S) -> None:
    """Prune events past ``event_retention_days`` now and every ``interval_s``; runs until
    cancelled. A failed pass is logged and tried again at the next interval."""
    while True:
        try:
            cutoff = utcnow() - timedelta(days=fc.settings.event_retention_days)
            async with fc.sessionmaker() as session:
                deleted = await prune(session, cutoff)
            if deleted:
                log.info("pruned %d events older than %s", deleted, cutoff.isoformat())
        except Exception:
            log.exception("event retention pass failed; next try in %.0f s", interval_s)
        await asyncio.sleep(interval_s)


# -- helpers -------------------------------------------------------------------------------


def _check_key(key: str | None) -> str | None:
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY_CHARS or not key.isprintable():
        raise InvalidInput(
            f"An Idempotency-Key is 1 to {MAX_IDEMPOTENCY_KEY_CHARS} printable characters.",
            field="Idempotency-Key",
        )
    return key


def _summary(row: EventType) -> dict[str, Any]:
    return {
        "name": row.name,
        "category": row.category,
        "description": row.description,
        "schema": row.schema,
        "archived_at": row.archived_at.isoformat() if row.archived_at else None,
    }


async def _call_hook(hook: OnPublished | None, deliveries: int) -> None:
    if hook is None:
        return
    try:
        result = hook(deliveries)
        if inspect.isawaitable(result):
            await result
    except Exception:
        # The events are committed: a failing wake-up only delays them to the next poll.
        log.exception("on_published hook failed")
