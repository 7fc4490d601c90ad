"""Rollup buckets packed by period: one row per series, resolution and period holds every
bucket of that period as arrays, one column each: count, sum, min, max, last, and the mean
(sum / count, kept so the commonest answer, the average per bucket, is read as it is stored
instead of divided out point by point at every query).

A 1-minute row spans an hour (60 buckets), a 1-hour row a day (24 buckets). Slot ``i`` of a
row starting at ``period`` is the bucket starting at ``period + i * resolution``; a count of
0 is an empty bucket (its other values are 0 and mean nothing). Counts are unsigned 32-bit
integers, the rest 64-bit floats, all little-endian whatever the machine, so a database file
reads the same anywhere. Reading a day at a 1-minute step is then 24 rows per series, and
only the arrays its aggregation needs (docs/metrics.md, "Storage layout, and why").
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Iterator

MINUTE_S = 60
HOUR_S = 3600
DAY_S = 86_400
RESOLUTIONS = (MINUTE_S, HOUR_S)
PERIOD_S = {MINUTE_S: HOUR_S, HOUR_S: DAY_S}  # what one row spans, per resolution
SLOTS = {MINUTE_S: HOUR_S // MINUTE_S, HOUR_S: DAY_S // HOUR_S}  # buckets per row
FIELDS = ("counts", "sums", "mins", "maxs", "lasts", "means")
COUNT_CODE = "I"  # unsigned 32-bit: an hour of millisecond points is 3.6 million
VALUE_CODE = "d"
_SWAP = sys.byteorder != "little"

if array(COUNT_CODE).itemsize != 4 or array(VALUE_CODE).itemsize != 8:  # pragma: no cover
    raise ImportError("the packed rollup layout needs 4-byte unsigned ints and 8-byte floats")

Bucket = tuple[int, float, float, float, float]  # count, sum, min, max, last


def period_of(resolution: int, bucket_s: int) -> int:
    """The start of the row that holds the bucket starting at ``bucket_s``."""
    return bucket_s - bucket_s % PERIOD_S[resolution]


def slot_of(resolution: int, bucket_s: int) -> int:
    """The bucket's index in its row."""
    return (bucket_s % PERIOD_S[resolution]) // resolution


def slots_in(mask: int) -> Iterator[int]:
    """The set bits of a work entry's mask, lowest first."""
    slot = 0
    while mask:
        if mask & 1:
            yield slot
        mask >>= 1
        slot += 1


def counts_of(blob: bytes) -> array[int]:
    """A packed column of counts as an array."""
    out: array[int] = array(COUNT_CODE)
    out.frombytes(blob)
    if _SWAP:  # pragma: no cover - big-endian machines
        out.byteswap()
    return out


def values_of(blob: bytes) -> array[float]:
    """A packed column of values as an array."""
    out: array[float] = array(VALUE_CODE)
    out.frombytes(blob)
    if _SWAP:  # pragma: no cover - big-endian machines
        out.byteswap()
    return out


def encode(values: array[float] | array[int]) -> bytes:
    if _SWAP:  # pragma: no cover - big-endian machines
        values = array(values.typecode, values)
        values.byteswap()
    return values.tobytes()


def empty_blobs(resolution: int) -> dict[str, bytes]:
    """The columns of a row with every bucket empty."""
    n = SLOTS[resolution]
    counts = bytes(array(COUNT_CODE, [0]) * n)
    zeros = bytes(array(VALUE_CODE, [0.0]) * n)
    return {"counts": counts, **{name: zeros for name in FIELDS[1:]}}


class Packed:
    """A row's buckets, decoded for changing a few of them."""

    __slots__ = FIELDS

    def __init__(
        self,
        counts: array[int],
        sums: array[float],
        mins: array[float],
        maxs: array[float],
        lasts: array[float],
        means: array[float],
    ) -> None:
        self.counts = counts
        self.sums = sums
        self.mins = mins
        self.maxs = maxs
        self.lasts = lasts
        self.means = means

    @classmethod
    def empty(cls, resolution: int) -> Packed:
        n = SLOTS[resolution]
        zeros = array(VALUE_CODE, [0.0]) * n
        return cls(
            array(COUNT_CODE, [0]) * n,
            array(VALUE_CODE, zeros),
            array(VALUE_CODE, zeros),
            array(VALUE_CODE, zeros),
            array(VALUE_CODE, zeros),
            array(VALUE_CODE, zeros),
        )

    @classmethod
    def decode(cls, counts: bytes, *values: bytes) -> Packed:
        """A row from its columns, in ``FIELDS`` order."""
        return cls(counts_of(counts), *(values_of(blob) for blob in values))

    def blobs(self) -> dict[str, bytes]:
        return {name: encode(getattr(self, name)) for name in FIELDS}

    def put(self, slot: int, bucket: Bucket) -> None:
        count, total, low, high, last = bucket
        self.counts[slot] = count
        self.sums[slot] = total
        self.mins[slot] = low
        self.maxs[slot] = high
        self.lasts[slot] = last
        self.means[slot] = total / count

    def bucket(self, slot: int) -> Bucket | None:
        if not self.counts[slot]:
            return None
        return (
            self.counts[slot],
            self.sums[slot],
            self.mins[slot],
            self.maxs[slot],
            self.lasts[slot],
        )

    def merged(self) -> Bucket | None:
        """Every bucket of the row as one (an hour from its minutes): counts and sums add,
        the min of the mins, the max of the maxes, the last of the latest bucket; None when
        the row is empty."""
        full = [i for i, count in enumerate(self.counts) if count]
        if not full:
            return None
        return merge(b for i in full if (b := self.bucket(i)) is not None)


def merge(buckets: Iterator[Bucket] | list[Bucket]) -> Bucket:
    """Buckets in time order composed into one."""
    count, total, low, high, last = 0, 0.0, float("inf"), float("-inf"), 0.0
    for c, s, lo, hi, la in buckets:
        count += c
        total += s
        low = min(low, lo)
        high = max(high, hi)
        last = la
    return count, total, low, high, last
