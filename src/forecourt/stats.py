"""Figures the stats endpoints share: their time windows and a percentile."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

STATS_WINDOWS = {"1h": timedelta(hours=1), "24h": timedelta(days=1), "7d": timedelta(days=7)}


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of already sorted values; None for none."""
    if not sorted_values:
        return None
    rank = max(1, -(-int(q * 1000) * len(sorted_values) // 1000))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])
