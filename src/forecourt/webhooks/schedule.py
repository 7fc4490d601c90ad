"""When to try a delivery again, and what a receiver's answer means. Pure: no I/O, no clock.

The default (exponential) schedule: the first attempt at once, then after 5 s, 5 min, 30 min,
2 h, 5 h, 10 h and 10 h, each delay jittered by up to ±20% so that the retries of a burst of
deliveries to one endpoint spread out instead of arriving together. A policy with more attempts
keeps repeating the last step; ``linear`` waits a fixed ``interval_s`` between attempts;
``none`` makes one attempt only.

How an answer is classified
---------------------------
=======================================  =========  ============================================
answer                                   verdict    note
=======================================  =========  ============================================
2xx                                      success
408, 409, 425, 429, 5xx                  retry      429 and 503 honour ``Retry-After``, clamped
                                                    to [1 s, 24 h]
410 Gone                                 final      and the endpoint is disabled
other 4xx, 1xx, 3xx                      final      redirects are never followed: a receiver
                                                    that redirects is misconfigured, and asking
                                                    again would get the same answer
no answer: timeout, connection, tls...   retry
no answer: ssrf, invalid_url             final      the target is refused before any request
=======================================  =========  ============================================
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal, cast

# Delays before attempts 2..8 of the default schedule.
DEFAULT_STEPS_S: tuple[float, ...] = (5.0, 300.0, 1_800.0, 7_200.0, 18_000.0, 36_000.0, 36_000.0)
DEFAULT_MAX_ATTEMPTS = len(DEFAULT_STEPS_S) + 1
DEFAULT_LINEAR_INTERVAL_S = 60.0
MAX_ATTEMPTS_LIMIT = 100
JITTER = 0.2  # a delay is nominal * (1 ± JITTER)
RETRY_AFTER_MIN_S = 1.0
RETRY_AFTER_MAX_S = 86_400.0

PolicyKind = Literal["exponential", "linear", "none"]
Rng = Callable[[], float]
"""A source of floats uniform in [0, 1), such as ``random.random``."""

# Error classes of an attempt that got no HTTP answer at all, as the sender names them.
ERROR_TIMEOUT = "timeout"
ERROR_CONNECTION = "connection"
ERROR_TLS = "tls"
ERROR_RESPONSE = "response"  # the receiver answered something that is not HTTP
ERROR_SSRF = "ssrf"
ERROR_INVALID_URL = "invalid_url"
ERROR_INTERNAL = "internal"
FINAL_ERRORS = frozenset({ERROR_SSRF, ERROR_INVALID_URL})

RETRYABLE_4XX = frozenset({408, 409, 425, 429})
RETRY_AFTER_STATUSES = frozenset({429, 503})
GONE = 410


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """An endpoint's retry policy; ``max_attempts`` counts the first attempt too."""

    kind: PolicyKind = "exponential"
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    interval_s: float = DEFAULT_LINEAR_INTERVAL_S

    def __post_init__(self) -> None:
        if self.kind not in ("exponential", "linear", "none"):
            raise ValueError(f"unknown retry policy kind: {self.kind!r}")
        if not 1 <= self.max_attempts <= MAX_ATTEMPTS_LIMIT:
            raise ValueError(f"max_attempts must be in 1..{MAX_ATTEMPTS_LIMIT}")
        if not (math.isfinite(self.interval_s) and self.interval_s >= 0):
            raise ValueError("interval_s must be a non-negative number")

    @classmethod
    def from_dict(cls, value: Mapping[str, Any] | None) -> RetryPolicy:
        """The policy stored on an endpoint (``{"kind", "max_attempts", "interval_s"}``).

        Missing keys take the defaults; ``none`` always means a single attempt.
        """
        value = value or {}
        kind = value.get("kind") or "exponential"
        if kind not in ("exponential", "linear", "none"):
            raise ValueError(f"unknown retry policy kind: {kind!r}")
        if kind == "none":
            return cls(kind="none", max_attempts=1)
        attempts = value.get("max_attempts")
        max_attempts = DEFAULT_MAX_ATTEMPTS if attempts is None else int(attempts)
        interval = value.get("interval_s")
        interval_s = DEFAULT_LINEAR_INTERVAL_S if interval is None else float(interval)
        return cls(kind=cast(PolicyKind, kind), max_attempts=max_attempts, interval_s=interval_s)

    def nominal_delay(self, attempts_made: int) -> float | None:
        """The un-jittered wait after ``attempts_made`` attempts; None when none may follow."""
        if attempts_made < 1 or attempts_made >= self.max_attempts or self.kind == "none":
            return None
        if self.kind == "linear":
            return self.interval_s
        return DEFAULT_STEPS_S[min(attempts_made, len(DEFAULT_STEPS_S)) - 1]


DEFAULT_POLICY = RetryPolicy()


class Verdict(enum.Enum):
    SUCCESS = "success"
    RETRY = "retry"  # try again if the policy allows another attempt
    FINAL = "final"  # failed for good, whatever the policy says


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt's result means for its delivery (and its endpoint)."""

    verdict: Verdict
    # Retry-After to honour instead of the schedule, already clamped (429 and 503 only).
    retry_after_s: float | None = None
    disable_endpoint: bool = False

    @property
    def succeeded(self) -> bool:
        return self.verdict is Verdict.SUCCESS


def classify(
    status_code: int | None, error_class: str | None, retry_after_s: float | None = None
) -> Outcome:
    """Classify one attempt: an HTTP status, or the class of error that prevented one.

    ``retry_after_s`` is the receiver's ``Retry-After`` in seconds (see ``parse_retry_after``);
    it is honoured, clamped, on 429 and 503 only.
    """
    if status_code is None:
        if error_class in FINAL_ERRORS:
            return Outcome(Verdict.FINAL)
        return Outcome(Verdict.RETRY)
    if 200 <= status_code < 300:
        return Outcome(Verdict.SUCCESS)
    if status_code == GONE:
        return Outcome(Verdict.FINAL, disable_endpoint=True)
    if status_code in RETRYABLE_4XX or 500 <= status_code < 600:
        honoured = None
        if status_code in RETRY_AFTER_STATUSES and retry_after_s is not None:
            honoured = clamp_retry_after(retry_after_s)
        return Outcome(Verdict.RETRY, retry_after_s=honoured)
    return Outcome(Verdict.FINAL)


def clamp_retry_after(seconds: float) -> float:
    """``Retry-After`` bounded to [1 s, 24 h]: a receiver can neither hammer nor stall us."""
    if math.isnan(seconds):
        return RETRY_AFTER_MIN_S
    return min(max(seconds, RETRY_AFTER_MIN_S), RETRY_AFTER_MAX_S)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date).

    None when absent or unreadable. A date in the past gives a negative number; ``classify``
    clamps it.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (when - (now or datetime.now(UTC))).total_seconds()


def jittered(nominal_s: float, rng: Rng) -> float:
    """``nominal_s`` scaled by a factor uniform in [1 - JITTER, 1 + JITTER]."""
    return max(0.0, nominal_s * (1.0 + JITTER * (2.0 * rng() - 1.0)))


def next_attempt_delay(
    policy: RetryPolicy,
    attempts_made: int,
    retry_after_s: float | None = None,
    rng: Rng = random.random,
) -> float | None:
    """Seconds until the next attempt after ``attempts_made`` attempts; None: give up (failed).

    A receiver's ``Retry-After`` (already clamped by ``classify``) replaces the scheduled
    delay, but never grants an attempt beyond ``max_attempts``.
    """
    nominal = policy.nominal_delay(attempts_made)
    if nominal is None:
        return None
    if retry_after_s is not None:
        return clamp_retry_after(retry_after_s)
    return jittered(nominal, rng)


def schedule(policy: RetryPolicy, rng: Rng = random.random) -> list[float]:
    """Delay before every attempt of a delivery that keeps failing; the first is 0."""
    delays = [0.0]
    while (delay := next_attempt_delay(policy, len(delays), None, rng)) is not None:
        delays.append(delay)
    return delays
