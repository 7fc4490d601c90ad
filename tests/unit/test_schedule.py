"""The retry schedule and the classification of a receiver's answers (pure, property-tested)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from forecourt.webhooks.schedule import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_STEPS_S,
    JITTER,
    RETRY_AFTER_MAX_S,
    RETRY_AFTER_MIN_S,
    RetryPolicy,
    Verdict,
    clamp_retry_after,
    classify,
    next_attempt_delay,
    parse_retry_after,
    schedule,
)

# Floating-point slack on the ±20% bound.
EPS = 1e-9

policies = st.one_of(
    st.builds(
        RetryPolicy,
        kind=st.just("exponential"),
        max_attempts=st.integers(1, 30),
    ),
    st.builds(
        RetryPolicy,
        kind=st.just("linear"),
        max_attempts=st.integers(1, 30),
        interval_s=st.floats(0, 86_400, allow_nan=False),
    ),
    st.builds(RetryPolicy, kind=st.just("none"), max_attempts=st.just(1)),
)
seeds = st.integers(0, 2**32 - 1)
unit_floats = st.floats(0, 1, exclude_max=True)


def nominal(policy: RetryPolicy, attempt_index: int) -> float:
    """The nominal delay before attempt ``attempt_index + 1`` (index 0: the first, at once)."""
    if attempt_index == 0:
        return 0.0
    if policy.kind == "linear":
        return policy.interval_s
    return DEFAULT_STEPS_S[min(attempt_index, len(DEFAULT_STEPS_S)) - 1]


@given(policies, seeds)
def test_schedule_has_max_attempts_entries_each_within_jitter(
    policy: RetryPolicy, seed: int
) -> None:
    delays = schedule(policy, random.Random(seed).random)
    assert len(delays) == policy.max_attempts
    assert delays[0] == 0.0
    for index, delay in enumerate(delays):
        step = nominal(policy, index)
        assert delay >= 0.0
        assert step * (1 - JITTER) - EPS <= delay <= step * (1 + JITTER) + EPS


@given(policies, st.integers(0, 200), unit_floats)
def test_next_delay_is_none_exactly_when_attempts_are_used_up(
    policy: RetryPolicy, made: int, draw: float
) -> None:
    delay = next_attempt_delay(policy, made, None, lambda: draw)
    if made < 1 or made >= policy.max_attempts:
        assert delay is None
    else:
        assert delay is not None
        step = nominal(policy, made)
        assert step * (1 - JITTER) - EPS <= delay <= step * (1 + JITTER) + EPS


@given(st.integers(1, 7), st.sampled_from([0.0, 0.999999999]))
def test_jitter_reaches_both_ends(made: int, draw: float) -> None:
    delay = next_attempt_delay(RetryPolicy(), made, None, lambda: draw)
    assert delay is not None
    expected = DEFAULT_STEPS_S[made - 1] * (1 - JITTER if draw == 0.0 else 1 + JITTER)
    assert delay == pytest.approx(expected, rel=1e-6)


def test_default_schedule_is_the_documented_one() -> None:
    delays = schedule(RetryPolicy(), lambda: 0.5)  # 0.5: no jitter
    assert delays == [0, 5, 300, 1_800, 7_200, 18_000, 36_000, 36_000]
    assert len(delays) == DEFAULT_MAX_ATTEMPTS


def test_longer_exponential_policy_repeats_the_last_step() -> None:
    delays = schedule(RetryPolicy(max_attempts=10), lambda: 0.5)
    assert delays[-3:] == [36_000, 36_000, 36_000]


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_retry_after_is_clamped(seconds: float) -> None:
    clamped = clamp_retry_after(seconds)
    assert RETRY_AFTER_MIN_S <= clamped <= RETRY_AFTER_MAX_S
    if RETRY_AFTER_MIN_S <= seconds <= RETRY_AFTER_MAX_S:
        assert clamped == seconds


@given(st.sampled_from([429, 503]), st.floats(-1e9, 1e9), st.integers(1, 7))
def test_retry_after_replaces_the_schedule_within_bounds(
    status: int, retry_after: float, made: int
) -> None:
    outcome = classify(status, None, retry_after)
    assert outcome.verdict is Verdict.RETRY
    assert outcome.retry_after_s is not None
    assert RETRY_AFTER_MIN_S <= outcome.retry_after_s <= RETRY_AFTER_MAX_S
    delay = next_attempt_delay(RetryPolicy(), made, outcome.retry_after_s, lambda: 0.0)
    assert delay == outcome.retry_after_s


def test_retry_after_never_grants_an_extra_attempt() -> None:
    outcome = classify(429, None, 10.0)
    assert next_attempt_delay(RetryPolicy(max_attempts=2), 2, outcome.retry_after_s) is None


@given(st.integers(500, 599).filter(lambda s: s != 503), st.floats(0, 100))
def test_retry_after_is_ignored_on_other_statuses(status: int, retry_after: float) -> None:
    assert classify(status, None, retry_after).retry_after_s is None


@pytest.mark.parametrize(
    ("status", "error", "verdict", "disables"),
    [
        (200, None, Verdict.SUCCESS, False),
        (201, None, Verdict.SUCCESS, False),
        (204, None, Verdict.SUCCESS, False),
        (299, None, Verdict.SUCCESS, False),
        (101, None, Verdict.FINAL, False),
        (301, None, Verdict.FINAL, False),
        (302, None, Verdict.FINAL, False),
        (307, None, Verdict.FINAL, False),
        (400, None, Verdict.FINAL, False),
        (401, None, Verdict.FINAL, False),
        (403, None, Verdict.FINAL, False),
        (404, None, Verdict.FINAL, False),
        (413, None, Verdict.FINAL, False),
        (422, None, Verdict.FINAL, False),
        (408, None, Verdict.RETRY, False),
        (409, None, Verdict.RETRY, False),
        (425, None, Verdict.RETRY, False),
        (429, None, Verdict.RETRY, False),
        (410, None, Verdict.FINAL, True),
        (500, None, Verdict.RETRY, False),
        (502, None, Verdict.RETRY, False),
        (503, None, Verdict.RETRY, False),
        (504, None, Verdict.RETRY, False),
        (None, "timeout", Verdict.RETRY, False),
        (None, "connection", Verdict.RETRY, False),
        (None, "tls", Verdict.RETRY, False),
        (None, "response", Verdict.RETRY, False),
        (None, "internal", Verdict.RETRY, False),
        (None, "ssrf", Verdict.FINAL, False),
        (None, "invalid_url", Verdict.FINAL, False),
    ],
)
def test_classification_table(
    status: int | None, error: str | None, verdict: Verdict, disables: bool
) -> None:
    outcome = classify(status, error)
    assert outcome.verdict is verdict
    assert outcome.disable_endpoint is disables
    assert outcome.succeeded is (verdict is Verdict.SUCCESS)


@given(st.integers(400, 499).filter(lambda s: s not in {408, 409, 410, 425, 429}))
def test_every_other_4xx_is_final(status: int) -> None:
    assert classify(status, None).verdict is Verdict.FINAL


def test_parse_retry_after_seconds_and_dates() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after(" 7 ", now) == 7.0
    assert parse_retry_after(None, now) is None
    assert parse_retry_after("", now) is None
    assert parse_retry_after("soon", now) is None
    later = format_datetime(now + timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(later, now) == 90.0
    earlier = format_datetime(now - timedelta(hours=1), usegmt=True)
    past = parse_retry_after(earlier, now)
    assert past is not None and past < 0
    assert clamp_retry_after(past) == RETRY_AFTER_MIN_S


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        (None, RetryPolicy()),
        ({}, RetryPolicy()),
        ({"kind": "none", "max_attempts": 5}, RetryPolicy(kind="none", max_attempts=1)),
        (
            {"kind": "linear", "max_attempts": 3, "interval_s": 0},
            RetryPolicy(kind="linear", max_attempts=3, interval_s=0.0),
        ),
        ({"kind": "exponential", "max_attempts": 4}, RetryPolicy(max_attempts=4)),
    ],
)
def test_policy_from_endpoint_dict(stored: dict[str, object] | None, expected: RetryPolicy) -> None:
    assert RetryPolicy.from_dict(stored) == expected


@pytest.mark.parametrize(
    "stored",
    [{"kind": "fibonacci"}, {"max_attempts": -1}, {"kind": "linear", "interval_s": -5}],
)
def test_bad_policy_is_refused(stored: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy.from_dict(stored)
