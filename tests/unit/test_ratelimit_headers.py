"""RateLimit headers, as exact strings."""

from __future__ import annotations

from forecourt.ratelimit.headers import rate_limit_headers
from forecourt.ratelimit.windows import Decision, Window, WindowState, evaluate, fresh

MINUTE = Window("minute", 60, 60)
HOUR = Window("hour", 1000, 3600)


def test_allowed_reports_the_window_with_least_remaining() -> None:
    decision = Decision(
        allowed=True,
        states=(WindowState(MINUTE, 12, 41), WindowState(HOUR, 900, 3000)),
        retry_after_s=0,
        violated=None,
    )
    assert rate_limit_headers(decision) == {
        "RateLimit-Policy": '"minute";q=60;w=60, "hour";q=1000;w=3600',
        "RateLimit": '"minute";r=12;t=41',
        "X-RateLimit-Limit": "60",
        "X-RateLimit-Remaining": "12",
        "X-RateLimit-Reset": "41",
    }


def test_ties_on_remaining_go_to_the_sooner_reset() -> None:
    decision = Decision(
        allowed=True,
        states=(WindowState(HOUR, 5, 3000), WindowState(MINUTE, 5, 41)),
        retry_after_s=0,
        violated=None,
    )
    headers = rate_limit_headers(decision)
    assert headers["RateLimit"] == '"minute";r=5;t=41'
    assert headers["RateLimit-Policy"] == '"hour";q=1000;w=3600, "minute";q=60;w=60'


def test_denied_reports_the_violated_window_and_retry_after() -> None:
    decision = Decision(
        allowed=False,
        states=(WindowState(MINUTE, 3, 20), WindowState(HOUR, 0, 1800)),
        retry_after_s=1800,
        violated=HOUR,
    )
    assert rate_limit_headers(decision) == {
        "RateLimit-Policy": '"minute";q=60;w=60, "hour";q=1000;w=3600',
        "RateLimit": '"hour";r=0;t=1800',
        "X-RateLimit-Limit": "1000",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": "1800",
        "Retry-After": "1800",
    }


def test_denied_without_a_violated_window_reports_the_tightest() -> None:
    decision = Decision(
        allowed=False,
        states=(WindowState(MINUTE, 0, 1), WindowState(HOUR, 0, 1)),
        retry_after_s=1,
        violated=None,
    )
    headers = rate_limit_headers(decision)
    assert headers["RateLimit"] == '"minute";r=0;t=1'
    assert headers["Retry-After"] == "1"


def test_names_are_quoted_as_structured_field_strings() -> None:
    window = Window('burst "b" \\ 1', 5, 1)
    decision = Decision(True, (WindowState(window, 4, 1),), 0, None)
    assert rate_limit_headers(decision)["RateLimit-Policy"] == '"burst \\"b\\" \\\\ 1";q=5;w=1'


def test_no_windows_no_headers() -> None:
    assert rate_limit_headers(Decision(True, (), 0, None)) == {}


def test_headers_from_a_real_decision() -> None:
    now_ms = 1_699_999_999_000  # 19 s into a minute, 2801 s before the hour ends
    windows = [MINUTE, HOUR]
    counters = [fresh(now_ms, MINUTE.ms), fresh(now_ms, HOUR.ms)]
    headers = rate_limit_headers(evaluate(now_ms, counters, windows, 48))
    assert headers["RateLimit"] == '"minute";r=12;t=41'
    assert headers["X-RateLimit-Remaining"] == "12"
    assert "Retry-After" not in headers
