"""The event log as a resume past the replay window reads it: the events service's
``accepted_after`` and ``count_accepted`` through one short session each."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from forecourt.events import service as events
from forecourt.events.envelope import StoredEvent

if TYPE_CHECKING:
    from forecourt.core import Forecourt


class EventArchive:
    """``forecourt.streams.backfill.Archive`` over the events service."""

    def __init__(self, fc: Forecourt) -> None:
        self._sessionmaker = fc.sessionmaker
        self.max_events = fc.settings.stream_resume_max_events

    async def count(
        self, tenant_id: str, types: Sequence[str] | None, since: datetime, until: datetime
    ) -> int:
        async with self._sessionmaker() as session:
            return await events.count_accepted(
                session, tenant_id, types, since=since, until=until, limit=self.max_events + 1
            )

    async def page(
        self,
        tenant_id: str,
        types: Sequence[str] | None,
        since: datetime,
        until: datetime,
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> Sequence[StoredEvent]:
        # A session per page: none is held while the client takes its time to read.
        async with self._sessionmaker() as session:
            return await events.accepted_after(
                session, tenant_id, types, since=since, until=until, after=after, limit=limit
            )
