"""Answering a query: the cheapest resolution for the step, and the aggregation per step.

Resolution: the coarsest of 1 hour and 1 minute that divides the step, else the raw points.
Steps start at multiples of the step since 1970 (``from`` is rounded down to one); a step's
value aggregates every bucket (or point) that starts inside it, which is exact for count,
sum, min, max, last and avg because buckets keep count and sum.

p95 needs the values themselves: it is read from the raw points (nearest rank over the
step's points) while ``from`` is within raw retention; past it, from the finest rollup that
divides the step, over its buckets' averages, and the answer says ``approximate``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncConnection

MINUTE_S = 60
HOUR_S = 3600
RESOLUTION_NAMES = {0: "raw", MINUTE_S: "1m", HOUR_S: "1h"}
MAX_STEPS = 11_000  # steps per series in one answer
MAX_STEP_S = 366 * 86_400

_ROLLUPS = text(
    "SELECT series_id, bucket, count, sum, min, max, last, last_ts FROM metric_rollups "
    "WHERE series_id IN :ids AND resolution = :resolution AND bucket >= :start "
    "AND bucket < :end ORDER BY series_id, bucket"
).bindparams(bindparam("ids", expanding=True))
_RAW = text(
    "SELECT series_id, ts, value FROM metric_points WHERE series_id IN :ids "
    "AND ts >= :start AND ts < :end ORDER BY series_id, ts"
).bindparams(bindparam("ids", expanding=True))


@dataclass(frozen=True, slots=True)
class Plan:
    resolution: int  # 0: raw points
    approximate: bool


def plan(step: int, agg: str, start_s: int, now_s: int, raw_days: int) -> Plan:
    """Where to read a query of ``step`` seconds and ``agg`` starting at ``start_s``."""
    coarsest = next((r for r in (HOUR_S, MINUTE_S) if step % r == 0), 0)
    if agg != "p95":
        return Plan(coarsest, False)
    if start_s >= now_s - raw_days * 86_400 or coarsest == 0:
        return Plan(0, False)
    return Plan(MINUTE_S, True)


def window(start_s: int, end_s: int, step: int) -> tuple[int, int]:
    """The steps' range: ``start_s`` rounded down to a step, ``end_s`` (exclusive)."""
    return start_s - start_s % step, end_s


class _Acc:
    __slots__ = ("count", "last", "last_ts", "max", "min", "sum", "values")

    def __init__(self) -> None:
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.last = 0.0
        self.last_ts = -1
        self.values: list[float] = []

    def value(self, agg: str) -> float:
        if agg == "avg":
            return self.sum / self.count if self.count else 0.0
        if agg == "p95":
            return percentile(self.values, 0.95)
        return float(getattr(self, agg))


def percentile(values: list[float], q: float) -> float:
    """Nearest rank: the smallest value with at least ``q`` of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(math.ceil(q * len(ordered)) - 1, 0)]


async def read(
    conn: AsyncConnection,
    ids: Sequence[int],
    how: Plan,
    start_s: int,
    end_s: int,
    step: int,
    agg: str,
) -> dict[int, list[tuple[int, float]]]:
    """Per series id, (step start in epoch s, value) pairs, oldest first."""
    out: dict[int, list[tuple[int, float]]] = {sid: [] for sid in ids}
    if not ids:
        return out
    if how.resolution == 0:
        result = await conn.execute(
            _RAW, {"ids": list(ids), "start": start_s * 1000, "end": end_s * 1000}
        )
        accs = _from_raw(result, step, agg)
    else:
        result = await conn.execute(
            _ROLLUPS,
            {"ids": list(ids), "resolution": how.resolution, "start": start_s, "end": end_s},
        )
        if how.resolution != step or agg == "p95":
            accs = _from_rollups(result, step, agg)
        else:
            # One bucket per step: the answer is the bucket, no grouping.
            pick = _PICK[agg]
            for sid, bucket, count, total, low, high, last, _ in result.all():
                out[sid].append((bucket, pick(count, total, low, high, last)))
            return out
    for (sid, key), acc in accs.items():
        out[sid].append((key, acc.value(agg)))
    return out


_PICK: dict[str, Callable[[int, float, float, float, float], float]] = {
    "avg": lambda c, s, lo, hi, last: s / c,
    "sum": lambda c, s, lo, hi, last: s,
    "min": lambda c, s, lo, hi, last: lo,
    "max": lambda c, s, lo, hi, last: hi,
    "last": lambda c, s, lo, hi, last: last,
    "count": lambda c, s, lo, hi, last: float(c),
}


def _from_raw(rows: Iterable[Any], step: int, agg: str) -> dict[tuple[int, int], _Acc]:
    accs: dict[tuple[int, int], _Acc] = {}
    step_ms = step * 1000
    for sid, ts, value in rows:
        key = (sid, (ts - ts % step_ms) // 1000)
        acc = accs.get(key)
        if acc is None:
            acc = accs[key] = _Acc()
        acc.count += 1
        acc.sum += value
        acc.min = min(acc.min, value)
        acc.max = max(acc.max, value)
        if ts >= acc.last_ts:
            acc.last, acc.last_ts = value, ts
        if agg == "p95":
            acc.values.append(value)
    return accs


def _from_rollups(rows: Iterable[Any], step: int, agg: str) -> dict[tuple[int, int], _Acc]:
    accs: dict[tuple[int, int], _Acc] = {}
    for sid, bucket, count, total, low, high, last, last_ts in rows:
        key = (sid, bucket - bucket % step)
        acc = accs.get(key)
        if acc is None:
            acc = accs[key] = _Acc()
        acc.count += count
        acc.sum += total
        acc.min = min(acc.min, low)
        acc.max = max(acc.max, high)
        if last_ts >= acc.last_ts:
            acc.last, acc.last_ts = last, last_ts
        if agg == "p95":
            acc.values.append(total / count)
    return accs


def iso(epoch_s: int) -> str:
    """RFC 3339 in UTC with a Z, as the rest of the API writes times."""
    return datetime.fromtimestamp(epoch_s, UTC).isoformat().replace("+00:00", "Z")


def iso_ms(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat().replace("+00:00", "Z")
