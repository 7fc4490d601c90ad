"""Windows, decisions, and the arithmetic of the sliding-window counter.

Why a sliding-window counter
----------------------------
Each (key, window) costs two integers and a timestamp, whatever the traffic: O(1) memory, where
a moving window (a log of every request) grows with the limit. Weighting the previous fixed
window by how much of it still overlaps the sliding window smooths away the burst a plain fixed
window allows at its boundary (a full quota at 00:59 and another at 01:00). The admission test
is exact integer arithmetic, so the in-process backend and the Redis Lua script decide the very
same way. "Remaining" and "reset" fall out of the two counts directly, which is what the
rate-limit headers need. GCRA would keep one theoretical arrival time per window and its notion
of "remaining" is hard to explain to a client holding several quotas at once.

The arithmetic
--------------
For a window of ``w`` ms, ``curr`` counts the fixed window starting at ``start = now - now % w``
and ``prev`` the fixed window before it. With ``elapsed = now - start`` the estimated count is
``prev * (w - elapsed) / w + curr``, and a request of cost ``c`` is admitted iff::

    curr*w + prev*(w - elapsed) + c*w <= limit*w

A request is admitted only if every window admits it; all are checked before any is charged,
and a denied request changes nothing.

Counts stay below ``MAX_LIMIT`` and window lengths below ``MAX_WINDOW_MS`` so the Lua script,
whose numbers are IEEE doubles, can evaluate the same products exactly (see ``redis.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

MS_PER_S = 1000
# Upper bounds that keep every product of the admission test exact in Lua (doubles, 53 bits):
# a count times a window length is split into 26-bit limbs there, which needs count < 2**51
# and window length < 2**36 ms (about 795 days).
MAX_LIMIT = 2**50
MAX_COST = MAX_LIMIT
MAX_WINDOW_MS = 2**36

STANDARD_WINDOWS: dict[str, int] = {
    "second": 1,
    "minute": 60,
    "hour": 3600,
    "day": 86400,
    "month": 2592000,
}

WindowCounters = tuple[int, int, int]
"""``(start_ms, prev, curr)``: the current fixed window's start and the two counts."""


@dataclass(frozen=True, slots=True)
class Window:
    """A quota: ``limit`` units per sliding ``seconds``, as the sliding-window counter estimates.

    ``name`` is what clients see in the ``RateLimit`` headers, so it must be printable ASCII.
    """

    name: str
    limit: int
    seconds: int

    def __post_init__(self) -> None:
        if not self.name or not all(" " <= ch <= "~" for ch in self.name):
            raise ValueError(f"window name must be non-empty printable ASCII: {self.name!r}")
        if not 0 < self.limit <= MAX_LIMIT:
            raise ValueError(f"window limit must be in 1..{MAX_LIMIT}: {self.limit}")
        if not 0 < self.seconds * MS_PER_S < MAX_WINDOW_MS:
            raise ValueError(f"window length must be in 1..{MAX_WINDOW_MS // MS_PER_S} s")

    @property
    def ms(self) -> int:
        """The window's length in milliseconds."""
        return self.seconds * MS_PER_S


@dataclass(frozen=True, slots=True)
class WindowState:
    """One window as a client sees it after a decision.

    ``remaining`` is how many more units the window would admit right now; ``reset_s`` is the
    number of seconds until at least one more unit is admissible when ``remaining`` is 0, and
    otherwise until the end of the current fixed window.
    """

    window: Window
    remaining: int
    reset_s: int


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to one request against a set of windows.

    ``retry_after_s`` is 0 when allowed; when denied it is the whole number of seconds after
    which the same request would be admitted, absent other traffic. ``violated`` is the
    denying window with the longest wait (None when allowed, or when no window was at fault,
    as when a backend is down and the limiter fails closed).
    """

    allowed: bool
    states: tuple[WindowState, ...]
    retry_after_s: int
    violated: Window | None


class Limiter(Protocol):
    """A rate-limiting backend: charges, inspects and forgets a key's windows."""

    async def hit(self, key: str, windows: Sequence[Window], cost: int = 1) -> Decision:
        """Charge ``cost`` to every window of ``key`` if all of them admit it."""
        ...

    async def peek(self, key: str, windows: Sequence[Window]) -> Decision:
        """Decide a request of cost 1 without charging anything."""
        ...

    async def reset(self, key: str) -> None:
        """Forget every window of ``key``."""
        ...

    async def aclose(self) -> None:
        """Release what the limiter holds."""
        ...


def check_windows(windows: Sequence[Window]) -> None:
    """Raise ValueError unless the windows have distinct lengths.

    Backends store a key's counters by window length, so two windows of the same length would
    share one pair of counts.
    """
    lengths = {window.seconds for window in windows}
    if len(lengths) != len(windows):
        raise ValueError("windows must have distinct lengths")


def check_cost(cost: int) -> None:
    """Raise ValueError unless ``cost`` is a usable request cost."""
    if not 1 <= cost <= MAX_COST:
        raise ValueError(f"cost must be in 1..{MAX_COST}: {cost}")


def roll(start_ms: int, prev: int, curr: int, now_ms: int, w_ms: int) -> WindowCounters:
    """Move stored counters forward to the fixed window containing ``now_ms``.

    Idempotent. If the clock has stepped back before ``start_ms`` the counters are kept as they
    are, which is the conservative choice: nothing is forgotten early.
    """
    current = now_ms - now_ms % w_ms
    if current <= start_ms:
        return (start_ms, prev, curr)
    if current == start_ms + w_ms:
        return (current, curr, 0)
    return (current, 0, 0)


def fresh(now_ms: int, w_ms: int) -> WindowCounters:
    """Counters of a window that has seen no traffic."""
    return (now_ms - now_ms % w_ms, 0, 0)


def _headroom(now_ms: int, start: int, prev: int, curr: int, w: int, limit: int) -> int:
    # limit - curr - ceil(prev * (w - elapsed) / w): the largest cost the window admits, which
    # is negative once it is overdrawn. cost <= headroom is the admission test rearranged.
    elapsed = now_ms - start if now_ms > start else 0
    return limit - curr + (-prev * (w - elapsed)) // w


def admits(now_ms: int, counters: WindowCounters, window: Window, cost: int) -> bool:
    """Whether ``window`` admits a request of ``cost`` at ``now_ms``."""
    w = window.ms
    start, prev, curr = roll(*counters, now_ms, w)
    return cost <= _headroom(now_ms, start, prev, curr, w, window.limit)


def remaining(now_ms: int, counters: WindowCounters, window: Window) -> int:
    """Whole units the window would still admit at ``now_ms``."""
    w = window.ms
    start, prev, curr = roll(*counters, now_ms, w)
    return max(0, _headroom(now_ms, start, prev, curr, w, window.limit))


def wait_ms(now_ms: int, counters: WindowCounters, window: Window, cost: int) -> int:
    """Milliseconds until ``window`` admits a request of ``cost``, assuming no other traffic.

    0 when it admits now. The estimate only falls as time passes (``prev`` decays linearly, and
    at a boundary ``curr`` becomes a ``prev`` weighted at most 1), so the first admissible
    instant is found by solving the admission inequality in the current fixed window and, if it
    has no solution there, in the next one. A cost above the limit is never admitted; for it
    the wait until both counts have aged out is returned.
    """
    w = window.ms
    start, prev, curr = roll(*counters, now_ms, w)
    return _wait(now_ms, start, prev, curr, w, window.limit, cost)


def _wait(now_ms: int, start: int, prev: int, curr: int, w: int, limit: int, cost: int) -> int:
    now_ms = max(now_ms, start)
    if cost > limit:
        return start + 2 * w - now_ms
    # Current fixed window: prev*(w - e) <= (limit - curr - cost)*w, smallest e >= elapsed.
    spare = limit - curr - cost
    if spare >= 0:
        if prev == 0:
            return 0
        first = max(w - spare * w // prev, now_ms - start)
        if first < w:
            return start + first - now_ms
    # Next fixed window, where curr has become prev and nothing is current yet.
    following = start + w
    if curr == 0:
        return following - now_ms
    first = max(w - (limit - cost) * w // curr, 0)
    if first < w:
        return following + first - now_ms
    # Even one millisecond of the old count is too much: wait until it has aged out.
    return start + 2 * w - now_ms


def ceil_s(ms: int) -> int:
    """Milliseconds rounded up to whole seconds."""
    return -(-ms // MS_PER_S)


def state(now_ms: int, counters: WindowCounters, window: Window) -> WindowState:
    """The client-facing state of one window at ``now_ms``."""
    w = window.ms
    start, prev, curr = roll(*counters, now_ms, w)
    return _state(now_ms, start, prev, curr, window, w)


def _state(now_ms: int, start: int, prev: int, curr: int, window: Window, w: int) -> WindowState:
    left = _headroom(now_ms, start, prev, curr, w, window.limit)
    if left > 0:
        reset_ms = start + w - max(now_ms, start)
    else:
        left = 0
        reset_ms = _wait(now_ms, start, prev, curr, w, window.limit, 1)
    return WindowState(window=window, remaining=left, reset_s=-(-reset_ms // MS_PER_S))


def outcome(
    now_ms: int,
    counters: Sequence[WindowCounters],
    windows: Sequence[Window],
    cost: int,
    *,
    allowed: bool,
) -> Decision:
    """Build the Decision for counters as they stand after the request was decided.

    When allowed, ``counters`` already include the charge; when denied they are unchanged, and
    the wait is computed for a request of ``cost``. The Redis backend decides in Lua and builds
    its Decision here from what the script returns.
    """
    states = []
    worst: Window | None = None
    worst_wait = 0
    for (start, prev, curr), window in zip(counters, windows, strict=True):
        w = window.ms
        start, prev, curr = roll(start, prev, curr, now_ms, w)
        states.append(_state(now_ms, start, prev, curr, window, w))
        if not allowed and cost > _headroom(now_ms, start, prev, curr, w, window.limit):
            waited = _wait(now_ms, start, prev, curr, w, window.limit, cost)
            if worst is None or waited > worst_wait:
                worst, worst_wait = window, waited
    if allowed:
        return Decision(allowed=True, states=tuple(states), retry_after_s=0, violated=None)
    return Decision(
        allowed=False,
        states=tuple(states),
        retry_after_s=max(1, ceil_s(worst_wait)),
        violated=worst,
    )


def evaluate(
    now_ms: int,
    counters: Sequence[WindowCounters],
    windows: Sequence[Window],
    cost: int,
) -> Decision:
    """Decide a request of ``cost`` against counters as stored before it.

    The caller charges ``cost`` to every window's ``curr`` (after ``roll``) if, and only if,
    the decision is allowed.
    """
    rolled = _roll_all(now_ms, counters, windows)
    allowed = _admit_all(now_ms, rolled, windows, cost)
    after = [(s, p, c + cost) for s, p, c in rolled] if allowed else rolled
    return outcome(now_ms, after, windows, cost, allowed=allowed)


def observe(now_ms: int, counters: Sequence[WindowCounters], windows: Sequence[Window]) -> Decision:
    """What a request of cost 1 would get at ``now_ms``, without charging it."""
    rolled = _roll_all(now_ms, counters, windows)
    allowed = _admit_all(now_ms, rolled, windows, 1)
    return outcome(now_ms, rolled, windows, 1, allowed=allowed)


def _roll_all(
    now_ms: int, counters: Sequence[WindowCounters], windows: Sequence[Window]
) -> list[WindowCounters]:
    return [
        roll(s, p, c, now_ms, window.ms)
        for (s, p, c), window in zip(counters, windows, strict=True)
    ]


def _admit_all(
    now_ms: int, rolled: Sequence[WindowCounters], windows: Sequence[Window], cost: int
) -> bool:
    return all(
        cost <= _headroom(now_ms, s, p, c, window.ms, window.limit)
        for (s, p, c), window in zip(rolled, windows, strict=True)
    )
