"""The delivery queue's depth and the age of its oldest due delivery, computed when scraped.

One indexed statement answers both, and its answer is kept for ``ttl_s``, so a storm of
scrapes (or many Prometheus servers) costs one query per ``ttl_s`` whatever their number.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from datetime import datetime

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from forecourt.db.base import utcnow
from forecourt.webhooks.queue import backlog

CACHE_TTL_S = 5.0
log = logging.getLogger("forecourt.observability")


class Backlog(Collector):
    """``forecourt_delivery_queue_depth`` and ``forecourt_delivery_queue_oldest_due_seconds``
    from the last ``refresh()``; nothing when the database could not be read."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        ttl_s: float = CACHE_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._ttl_s = ttl_s
        self._clock = clock
        self._figures: tuple[int, float] | None = None
        self._read_at = -float("inf")
        self._lock = asyncio.Lock()
        self.queries = 0  # statements run so far

    async def refresh(self) -> None:
        """Read the queue unless the last reading is younger than ``ttl_s``; concurrent
        callers wait for one reading."""
        if self._clock() - self._read_at < self._ttl_s:
            return
        async with self._lock:
            if self._clock() - self._read_at < self._ttl_s:
                return
            try:
                async with self._sessionmaker() as session:
                    self.queries += 1
                    depth, earliest = await backlog(session)
            except Exception:
                log.warning("could not read the delivery queue for /metrics", exc_info=True)
                self._figures = None
            else:
                self._figures = (depth, _age_s(earliest, utcnow()))
            self._read_at = self._clock()

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())

    def collect(self) -> Iterator[GaugeMetricFamily]:
        if self._figures is None:
            return
        depth, age = self._figures
        yield GaugeMetricFamily(
            "forecourt_delivery_queue_depth",
            "Deliveries waiting to be attempted (pending or retrying).",
            value=depth,
        )
        yield GaugeMetricFamily(
            "forecourt_delivery_queue_oldest_due_seconds",
            "How long the longest-waiting due delivery has been due (0: none is due).",
            value=age,
        )


def _age_s(earliest: datetime | None, now: datetime) -> float:
    if earliest is None:
        return 0.0
    if earliest.tzinfo is None:
        earliest = earliest.replace(tzinfo=now.tzinfo)
    return max(0.0, (now - earliest).total_seconds())
