"""Failover: a shared limiter, stood in for by an in-process one while it is down.

Rate limiting must not take the API down with Redis. While the primary fails, requests are
decided by the fallback (fail open: each instance enforces the limits on its own, so a client
may get up to one quota per instance) or denied outright (fail closed). A primary call that
takes longer than ``timeout_s`` counts as a failure, which bounds what a sick Redis (or a
client retrying a dead one) adds to a request. The primary is probed again at most once per
``retry_interval_s``, so a dead Redis does not add a connection attempt to every request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from prometheus_client import Counter

from forecourt.observability.instruments import RATE_LIMIT_FAIL_OPEN
from forecourt.observability.registry import registered
from forecourt.ratelimit.windows import (
    Decision,
    Limiter,
    Window,
    WindowState,
    check_cost,
    check_windows,
)

LOGGER = logging.getLogger("forecourt.ratelimit")

RETRY_INTERVAL_S = 1.0
# A healthy Redis answers in about a millisecond; this is long enough not to flap under load.
PRIMARY_TIMEOUT_S = 2.0
# What a fail-closed denial tells the client to wait: the primary may be back by then.
CLOSED_RETRY_AFTER_S = 1
ERRORS_METRIC = "forecourt_ratelimit_backend_errors"


def _errors_counter() -> Counter:
    return registered(
        lambda: Counter(ERRORS_METRIC, "Outages of the shared rate-limit backend."),
        f"{ERRORS_METRIC}_total",
    )


BACKEND_ERRORS = _errors_counter()
"""``forecourt_ratelimit_backend_errors_total``: outages of the primary, counted once each."""


class FailoverLimiter:
    """A Limiter that answers from ``fallback`` (or denies) while ``primary`` fails.

    An outage starts with the primary's first error: one warning is logged on the
    ``forecourt.ratelimit`` logger and ``errors_counter`` is incremented once. It ends when the
    primary answers a probe, which is logged at info. A primary call slower than ``timeout_s``
    (None: no limit) counts as an error. Backend errors never escape; invalid
    arguments still raise ValueError, as with any Limiter. ``clock`` is monotonic seconds.
    """

    def __init__(
        self,
        primary: Limiter,
        fallback: Limiter,
        *,
        fail_open: bool = True,
        retry_interval_s: float = RETRY_INTERVAL_S,
        timeout_s: float | None = PRIMARY_TIMEOUT_S,
        errors_counter: Counter | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._primary = primary
        self._fallback = fallback
        self._fail_open = fail_open
        self._retry_interval_s = retry_interval_s
        self._timeout_s = timeout_s
        self._errors = BACKEND_ERRORS if errors_counter is None else errors_counter
        self._clock = clock
        self._down_since: float | None = None
        self._next_probe = 0.0

    @property
    def primary_down(self) -> bool:
        """Whether an outage of the primary is under way."""
        return self._down_since is not None

    async def hit(self, key: str, windows: Sequence[Window], cost: int = 1) -> Decision:
        """Charge ``cost`` to every window of ``key`` if all of them admit it."""
        check_windows(windows)
        check_cost(cost)
        return await self._decide(lambda limiter: limiter.hit(key, windows, cost), windows)

    async def peek(self, key: str, windows: Sequence[Window]) -> Decision:
        """Decide a request of cost 1 without charging anything."""
        check_windows(windows)
        return await self._decide(lambda limiter: limiter.peek(key, windows), windows)

    async def reset(self, key: str) -> None:
        """Forget ``key`` in both limiters (in the primary only if it is reachable)."""
        try:
            await self._fallback.reset(key)
        except Exception:
            LOGGER.exception("the fallback rate limiter failed to reset a key")
        if self._should_try_primary():
            try:
                async with asyncio.timeout(self._timeout_s):
                    await self._primary.reset(key)
            except Exception as exc:
                self._failed(exc)
            else:
                self._answered()

    async def aclose(self) -> None:
        """Close both limiters."""
        for limiter in (self._primary, self._fallback):
            try:
                await limiter.aclose()
            except Exception:
                LOGGER.debug("closing a rate limiter failed", exc_info=True)

    async def _decide(
        self, call: Callable[[Limiter], Awaitable[Decision]], windows: Sequence[Window]
    ) -> Decision:
        if self._should_try_primary():
            try:
                async with asyncio.timeout(self._timeout_s):
                    decision = await call(self._primary)
            except Exception as exc:
                self._failed(exc)
            else:
                self._answered()
                return decision
        if not self._fail_open:
            return _closed(windows)
        RATE_LIMIT_FAIL_OPEN.inc()
        try:
            return await call(self._fallback)
        except Exception:
            LOGGER.exception("the fallback rate limiter failed too; letting the request through")
            return Decision(allowed=True, states=(), retry_after_s=0, violated=None)

    def _should_try_primary(self) -> bool:
        if self._down_since is None:
            return True
        now = self._clock()
        if now < self._next_probe:
            return False
        # Claimed before awaiting, so concurrent requests send one probe, not one each.
        self._next_probe = now + self._retry_interval_s
        return True

    def _failed(self, exc: Exception) -> None:
        now = self._clock()
        self._next_probe = now + self._retry_interval_s
        if self._down_since is not None:
            return
        self._down_since = now
        self._errors.inc()
        LOGGER.warning(
            "rate-limit backend unavailable (%r); %s until it answers again",
            exc,
            "using in-process limits" if self._fail_open else "denying requests",
        )

    def _answered(self) -> None:
        if self._down_since is None:
            return
        LOGGER.info(
            "rate-limit backend answering again after %.1f s", self._clock() - self._down_since
        )
        self._down_since = None


def _closed(windows: Sequence[Window]) -> Decision:
    if not windows:
        return Decision(allowed=True, states=(), retry_after_s=0, violated=None)
    states = tuple(
        WindowState(window=window, remaining=0, reset_s=CLOSED_RETRY_AFTER_S) for window in windows
    )
    return Decision(allowed=False, states=states, retry_after_s=CLOSED_RETRY_AFTER_S, violated=None)
