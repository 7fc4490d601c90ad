"""Series by identity: found or created, with the per-tenant bound on their number.

A series is (tenant, source, name, labels). Ids are cached in the process (a series is never
renamed; a deleted tenant's ids are dropped when a write finds them gone). Creating series
is rare and serialised per tenant (the tenant's row is locked on PostgreSQL; the write gate
serialises SQLite), so the bound holds across nodes.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from forecourt import codec
from forecourt.db.base import utcnow
from forecourt.db.gate import WriteGate
from forecourt.metrics.models import MetricSeries

log = logging.getLogger("forecourt.metrics")

CACHE_MAX_ENTRIES = 200_000  # ids kept per process; past it the cache starts over
REFUSED_CARDINALITY = "series limit reached for the tenant"
NAMES_PER_STATEMENT = 500


def labels_key(labels: dict[str, str]) -> str:
    """The labels' canonical text: sorted keys, compact JSON."""
    return codec.dumps(labels, field="labels", sort_keys=True).decode() if labels else "{}"


@dataclass(frozen=True, slots=True)
class SeriesKey:
    tenant_id: str
    source: str
    name: str
    labels_key: str


class SeriesRegistry:
    """Ids of series, creating them within the tenant's bound."""

    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], gate: WriteGate, max_per_tenant: int
    ) -> None:
        self.sessionmaker = sessionmaker
        self.gate = gate
        self.max_per_tenant = max_per_tenant
        self._ids: dict[SeriesKey, int] = {}
        self.refused: Counter[str] = Counter()  # reason -> series refused

    def forget(self, series_ids: Iterable[int]) -> None:
        gone = set(series_ids)
        for key in [k for k, v in self._ids.items() if v in gone]:
            del self._ids[key]

    async def resolve(
        self, keys: Sequence[SeriesKey], labels: dict[SeriesKey, dict[str, str]]
    ) -> dict[SeriesKey, int]:
        """The id of each of ``keys`` (one tenant); a key missing from the answer was refused
        (counted in ``refused`` and logged)."""
        found = {k: self._ids[k] for k in keys if k in self._ids}
        missing = [k for k in dict.fromkeys(keys) if k not in found]
        if not missing:
            return found
        async with self.sessionmaker() as session:
            found.update(await self._lookup(session, missing))
        missing = [k for k in missing if k not in found]
        if missing:
            found.update(await self._create(missing, labels))
        if len(self._ids) > CACHE_MAX_ENTRIES:
            self._ids.clear()
        self._ids.update(found)
        return found

    async def _lookup(
        self, session: AsyncSession, keys: Sequence[SeriesKey]
    ) -> dict[SeriesKey, int]:
        wanted = set(keys)
        tenant = keys[0].tenant_id
        names = sorted({k.name for k in keys})
        out: dict[SeriesKey, int] = {}
        for i in range(0, len(names), NAMES_PER_STATEMENT):
            rows = await session.execute(
                select(
                    MetricSeries.id, MetricSeries.source, MetricSeries.name, MetricSeries.labels_key
                ).where(
                    MetricSeries.tenant_id == tenant,
                    MetricSeries.name.in_(names[i : i + NAMES_PER_STATEMENT]),
                )
            )
            for series_id, source, name, key in rows:
                candidate = SeriesKey(tenant, source, name, key)
                if candidate in wanted:
                    out[candidate] = series_id
        return out

    async def _create(
        self, keys: Sequence[SeriesKey], labels: dict[SeriesKey, dict[str, str]]
    ) -> dict[SeriesKey, int]:
        tenant = keys[0].tenant_id
        async with self.gate, self.sessionmaker() as session, session.begin():
            if (await session.connection()).dialect.name == "postgresql":
                await session.execute(
                    text("SELECT id FROM tenants WHERE id = :t FOR UPDATE"), {"t": tenant}
                )
            # Another node may have created some meanwhile.
            out = await self._lookup(session, keys)
            todo = [k for k in keys if k not in out]
            count = await session.scalar(
                select(func.count())
                .select_from(MetricSeries)
                .where(MetricSeries.tenant_id == tenant)
            )
            room = max(self.max_per_tenant - int(count or 0), 0)
            allowed, refused = todo[:room], todo[room:]
            now = utcnow()
            for key in allowed:
                row = MetricSeries(
                    tenant_id=tenant,
                    name=key.name,
                    source=key.source,
                    labels=labels.get(key, {}),
                    labels_key=key.labels_key,
                    created_at=now,
                )
                session.add(row)
                await session.flush()
                out[key] = row.id
        if refused:
            self.refused[REFUSED_CARDINALITY] += len(refused)
            log.warning(
                "metrics: refused %d new series of tenant %s (%s, limit %d), e.g. %s",
                len(refused),
                tenant,
                REFUSED_CARDINALITY,
                self.max_per_tenant,
                refused[0].name,
            )
        return out
