"""The in-process limiter: sliding-window counters in a dict.

It serves a single process (tests, development, and the fallback while Redis is down). Each
decision runs without an ``await`` between checking and charging, so concurrent tasks on one
event loop can never overdraw a window. It is not thread-safe.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from forecourt.ratelimit.windows import (
    MS_PER_S,
    Decision,
    Window,
    WindowCounters,
    check_cost,
    check_windows,
    evaluate,
    fresh,
    observe,
    roll,
)

# A sweep over all keys runs after this many hits, or after as many hits as there were keys
# when the last sweep ended if that is more: a sweep then costs O(1) per hit, however many keys.
SWEEP_EVERY_HITS = 1024


@dataclass(slots=True)
class _Entry:
    counters: dict[int, WindowCounters]  # by window length in ms
    last_ms: int
    # Idle for this long, every count of the key has aged out of both fixed windows.
    horizon_ms: int


class MemoryLimiter:
    """A Limiter that keeps its counters in this process.

    ``clock`` returns seconds since the epoch; inject a fake one in tests. A key idle for twice
    its longest window holds nothing but zeros, and is dropped at the next sweep.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        *,
        sweep_every: int = SWEEP_EVERY_HITS,
    ) -> None:
        self._clock = clock
        self._sweep_every = sweep_every
        self._entries: dict[str, _Entry] = {}
        self._hits_since_sweep = 0
        self._hits_before_sweep = sweep_every

    def __len__(self) -> int:
        """The number of keys currently held."""
        return len(self._entries)

    def _now_ms(self) -> int:
        return math.floor(self._clock() * MS_PER_S)

    def _counters(
        self, entry: _Entry | None, now_ms: int, windows: Sequence[Window]
    ) -> list[WindowCounters]:
        stored = entry.counters if entry is not None else {}
        result = []
        for window in windows:
            w = window.ms
            kept = stored.get(w)
            result.append(fresh(now_ms, w) if kept is None else roll(*kept, now_ms, w))
        return result

    async def hit(self, key: str, windows: Sequence[Window], cost: int = 1) -> Decision:
        """Charge ``cost`` to every window of ``key`` if all of them admit it."""
        check_windows(windows)
        check_cost(cost)
        if not windows:
            return Decision(allowed=True, states=(), retry_after_s=0, violated=None)
        now_ms = self._now_ms()
        entry = self._entries.get(key)
        counters = self._counters(entry, now_ms, windows)
        decision = evaluate(now_ms, counters, windows, cost)
        if decision.allowed:
            if entry is None:
                entry = self._entries[key] = _Entry(counters={}, last_ms=now_ms, horizon_ms=0)
            for (start, prev, curr), window in zip(counters, windows, strict=True):
                entry.counters[window.ms] = (start, prev, curr + cost)
            entry.last_ms = max(entry.last_ms, now_ms)
            entry.horizon_ms = max(entry.horizon_ms, 2 * max(window.ms for window in windows))
        self._hits_since_sweep += 1
        if self._hits_since_sweep >= self._hits_before_sweep:
            self._sweep(now_ms)
        return decision

    async def peek(self, key: str, windows: Sequence[Window]) -> Decision:
        """Decide a request of cost 1 without charging anything."""
        check_windows(windows)
        now_ms = self._now_ms()
        return observe(now_ms, self._counters(self._entries.get(key), now_ms, windows), windows)

    async def reset(self, key: str) -> None:
        """Forget every window of ``key``."""
        self._entries.pop(key, None)

    async def aclose(self) -> None:
        """Drop all counters."""
        self._entries.clear()

    def _sweep(self, now_ms: int) -> None:
        self._hits_since_sweep = 0
        idle = [k for k, e in self._entries.items() if now_ms - e.last_ms >= e.horizon_ms]
        for key in idle:
            del self._entries[key]
        self._hits_before_sweep = max(self._sweep_every, len(self._entries))
