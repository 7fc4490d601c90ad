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
    fresh,
    observe,
    outcome,
    roll,
)

# A sweep over all keys runs after this many hits, or after as many hits as there were keys
# when the last sweep ended if that is more: a sweep then costs O(1) per hit, however many keys.
SWEEP_EVERY_HITS = 1024
PLAN_CACHE_SIZE = 1024  # distinct window sets remembered as already validated
_EMPTY: dict[int, WindowCounters] = {}


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
        self._plans: dict[tuple[Window, ...], tuple[tuple[int, int], ...]] = {}

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
        if cost != 1:
            check_cost(cost)
        if not windows:
            return Decision(allowed=True, states=(), retry_after_s=0, violated=None)
        plan = self._plans.get(windows) if isinstance(windows, tuple) else None
        if plan is None:
            check_windows(windows)
            plan = tuple((w.ms, w.limit) for w in windows)
            if isinstance(windows, tuple) and len(self._plans) < PLAN_CACHE_SIZE:
                self._plans[windows] = plan
        now_ms = self._now_ms()
        entry = self._entries.get(key)
        stored = entry.counters if entry is not None else _EMPTY
        # Roll every window and test it before charging any (all-or-nothing), inline: this
        # runs on every request.
        rolled: list[WindowCounters] = []
        allowed = True
        for w, limit in plan:
            kept = stored.get(w)
            if kept is None:
                start, prev, curr = now_ms - now_ms % w, 0, 0
            else:
                start, prev, curr = roll(kept[0], kept[1], kept[2], now_ms, w)
            if allowed:
                elapsed = now_ms - start if now_ms > start else 0
                if cost > limit - curr + (-prev * (w - elapsed)) // w:
                    allowed = False
            rolled.append((start, prev, curr))
        if allowed:
            if entry is None:
                entry = self._entries[key] = _Entry(counters={}, last_ms=now_ms, horizon_ms=0)
            counters = entry.counters
            charged: list[WindowCounters] = []
            for (start, prev, curr), (w, _) in zip(rolled, plan, strict=True):
                counters[w] = after = (start, prev, curr + cost)
                charged.append(after)
            if now_ms > entry.last_ms:
                entry.last_ms = now_ms
            horizon = 2 * max(w for w, _ in plan)
            if horizon > entry.horizon_ms:
                entry.horizon_ms = horizon
            rolled = charged
        self._hits_since_sweep += 1
        if self._hits_since_sweep >= self._hits_before_sweep:
            self._sweep(now_ms)
        return outcome(now_ms, rolled, windows, cost, allowed=allowed)

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
