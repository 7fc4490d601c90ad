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
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import compress
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncConnection

from forecourt.metrics.buckets import HOUR_S, MINUTE_S, SLOTS, counts_of, period_of, values_of

RESOLUTION_NAMES = {0: "raw", MINUTE_S: "1m", HOUR_S: "1h"}
MAX_STEPS = 11_000  # steps per series in one answer
MAX_STEP_S = 366 * 86_400

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
    __slots__ = ("count", "last", "max", "min", "sum", "values")

    def __init__(self) -> None:
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.last = 0.0
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


class Stamps:
    """How an answer writes a step's start: epoch seconds here (a transport may write text).
    ``run`` is the stamps of ``count`` steps from ``start``, every ``step`` seconds."""

    def one(self, epoch_s: int) -> Any:
        return epoch_s

    def run(self, start: int, step: int, count: int) -> Sequence[Any]:
        return range(start, start + step * count, step)


EPOCH = Stamps()


class Points:
    """A series' answer, oldest first, as runs of (stamps, values) of equal length: a row of
    buckets answered whole is one run, so no per-point pair is built unless asked for by
    iterating, which yields (stamp, value) pairs."""

    __slots__ = ("runs",)

    def __init__(self) -> None:
        self.runs: list[tuple[Sequence[Any], list[float]]] = []

    def __iter__(self) -> Iterator[tuple[Any, float]]:
        for stamps, values in self.runs:
            yield from zip(stamps, values, strict=True)

    def __len__(self) -> int:
        return sum(len(values) for _, values in self.runs)


# The packed columns each aggregation reads, bucket by bucket and composed into larger steps;
# counts always (0: an empty bucket). p95 past raw retention is over the buckets' means.
_COLUMNS = {
    "avg": (("counts", "means"), ("counts", "sums")),
    "sum": (("counts", "sums"), ("counts", "sums")),
    "count": (("counts",), ("counts",)),
    "min": (("counts", "mins"), ("counts", "mins")),
    "max": (("counts", "maxs"), ("counts", "maxs")),
    "last": (("counts", "lasts"), ("counts", "lasts")),
    "p95": (("counts", "means"), ("counts", "means")),
}
_BUCKETS = {
    (agg, whole): text(
        f"SELECT series_id, period, {', '.join(columns[0 if whole else 1])} "
        "FROM metric_buckets WHERE series_id IN :ids AND resolution = :resolution "
        "AND period >= :start AND period < :end ORDER BY series_id, period"
    ).bindparams(bindparam("ids", expanding=True))
    for agg, columns in _COLUMNS.items()
    for whole in (True, False)
}


async def read(
    conn: AsyncConnection,
    ids: Sequence[int],
    how: Plan,
    start_s: int,
    end_s: int,
    step: int,
    agg: str,
    stamps: Stamps = EPOCH,
) -> dict[int, Points]:
    """Per series id, its points; ``stamps`` writes the step starts (default: epoch
    seconds). ``start_s`` is a multiple of ``step``."""
    out = {sid: Points() for sid in ids}
    if not ids:
        return out
    if how.resolution == 0:
        result = await conn.execute(
            _RAW, {"ids": list(ids), "start": start_s * 1000, "end": end_s * 1000}
        )
        accs = _from_raw(result, step, agg)
    else:
        resolution = how.resolution
        whole = resolution == step and agg != "p95"
        result = await conn.execute(
            _BUCKETS[(agg, whole)],
            {
                "ids": list(ids),
                "resolution": resolution,
                "start": period_of(resolution, start_s),
                "end": end_s,
            },
        )
        rows = result.all()
        if whole:
            _bucketwise(out, rows, resolution, start_s, end_s, agg, stamps)
            return out
        accs = _compose(rows, resolution, start_s, end_s, step, agg)
    one = stamps.one
    runs: dict[int, tuple[list[Any], list[float]]] = {}
    for (sid, key), acc in accs.items():
        run = runs.get(sid)
        if run is None:
            run = runs[sid] = ([], [])
            out[sid].runs.append(run)
        run[0].append(one(key))
        run[1].append(acc.value(agg))
    return out


def _bounds(period: int, resolution: int, start_s: int, end_s: int) -> tuple[int, int]:
    """The slots of a row whose buckets start in [start_s, end_s)."""
    low = max(0, -((period - start_s) // resolution))
    high = min(SLOTS[resolution], -((period - end_s) // resolution))
    return low, high


def _bucketwise(
    out: dict[int, Points],
    rows: Sequence[Any],
    resolution: int,
    start_s: int,
    end_s: int,
    agg: str,
    stamps: Stamps,
) -> None:
    """One bucket per step: each bucket is the answer, so a row's buckets go through whole,
    as one run (no per-bucket Python, which a day of minutes for 200 series would feel)."""
    slots = SLOTS[resolution]
    for sid, period, counts_blob, *columns in rows:
        low, high = _bounds(period, resolution, start_s, end_s)
        if low >= high:
            continue
        counts = counts_of(counts_blob)
        run = stamps.run(period, resolution, slots)
        if low or high < slots:
            counts, run = counts[low:high], run[low:high]
        if agg == "count":
            values = list(map(float, compress(counts, counts)))
            out[sid].runs.append((list(compress(run, counts)), values))
            continue
        column = values_of(columns[0])
        if low or high < slots:
            column = column[low:high]
        if all(counts):
            out[sid].runs.append((run, column.tolist()))
        else:
            out[sid].runs.append((list(compress(run, counts)), list(compress(column, counts))))


def _compose(
    rows: Sequence[Any], resolution: int, start_s: int, end_s: int, step: int, agg: str
) -> dict[tuple[int, int], _Acc]:
    """Buckets composed into steps (a multiple of the resolution): counts and sums add, the
    min of the mins, the max of the maxes, the last of the latest bucket; p95 takes each
    bucket's average."""
    accs: dict[tuple[int, int], _Acc] = {}
    for sid, period, counts_blob, *columns in rows:
        low, high = _bounds(period, resolution, start_s, end_s)
        counts = counts_of(counts_blob)
        column: Sequence[float] = values_of(columns[0]) if columns else counts
        for slot in range(low, high):
            count = counts[slot]
            if not count:
                continue
            at = period + slot * resolution
            key = (sid, at - at % step)
            acc = accs.get(key)
            if acc is None:
                acc = accs[key] = _Acc()
            acc.count += count
            value = column[slot]
            if agg in ("avg", "sum"):
                acc.sum += value
            elif agg == "min":
                acc.min = min(acc.min, value)
            elif agg == "max":
                acc.max = max(acc.max, value)
            elif agg == "last":
                acc.last = value  # rows and slots come in time order
            elif agg == "p95":
                acc.values.append(value)  # the bucket's mean
    return accs


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
        acc.last = value  # ordered by time within a series
        if agg == "p95":
            acc.values.append(value)
    return accs


def iso(epoch_s: int) -> str:
    """RFC 3339 in UTC with a Z, as the rest of the API writes times."""
    return datetime.fromtimestamp(epoch_s, UTC).isoformat().replace("+00:00", "Z")


def iso_ms(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat().replace("+00:00", "Z")
