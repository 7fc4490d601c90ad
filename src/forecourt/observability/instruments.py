"""Forecourt's own Prometheus metrics, and the small functions that count into them.

Labels are only ever taken from small fixed sets (a route's template, an HTTP method, a
status class, an outcome, a window name): never a raw path, an id or a tenant, so the
number of series stays bounded whatever the traffic.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from forecourt.observability.operations import OPERATIONS, PLUGIN_RUN
from forecourt.observability.registry import registered

# Request and run durations, in seconds: from a cached answer to a slow plugin.
LATENCY_BUCKETS_S = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
UNMATCHED_ROUTE = "<unmatched>"
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
RATE_LIMIT_SUBJECTS = ("key", "user", "ip")

HTTP_REQUESTS = registered(
    lambda: Counter(
        "forecourt_http_requests",
        "HTTP requests, by route template, method and status class.",
        ["route", "method", "status"],
    ),
    "forecourt_http_requests_total",
)
HTTP_SECONDS = registered(
    lambda: Histogram(
        "forecourt_http_request_duration_seconds",
        "Time from a request's arrival to the end of its response, by route template.",
        ["route", "method"],
        buckets=LATENCY_BUCKETS_S,
    ),
    "forecourt_http_request_duration_seconds",
)
RATE_LIMIT_DECISIONS = registered(
    lambda: Counter(
        "forecourt_ratelimit_decisions",
        "Rate-limit decisions, by whose bucket was charged (key, user, ip) and outcome.",
        ["subject", "outcome"],
    ),
    "forecourt_ratelimit_decisions_total",
)
RATE_LIMIT_REJECTIONS = registered(
    lambda: Counter(
        "forecourt_ratelimit_rejections",
        "Requests refused with 429, by the window that refused them "
        "('backend' when the shared backend is down and limits fail closed).",
        ["window"],
    ),
    "forecourt_ratelimit_rejections_total",
)
RATE_LIMIT_FAIL_OPEN = registered(
    lambda: Counter(
        "forecourt_ratelimit_fail_open",
        "Rate-limit decisions made by the in-process fallback while Redis was unavailable.",
    ),
    "forecourt_ratelimit_fail_open_total",
)
EVENTS_PUBLISHED = registered(
    lambda: Counter("forecourt_events_published", "Events stored (duplicates not counted)."),
    "forecourt_events_published_total",
)
PLUGIN_RUNS = registered(
    lambda: Counter(
        "forecourt_plugin_runs",
        "Plugin runs, by outcome (ok, error, timeout, killed, refused).",
        ["outcome"],
    ),
    "forecourt_plugin_runs_total",
)
PLUGIN_RUN_SECONDS = registered(
    lambda: Histogram(
        "forecourt_plugin_run_seconds", "Duration of plugin runs.", buckets=LATENCY_BUCKETS_S
    ),
    "forecourt_plugin_run_seconds",
)
METRIC_POINTS_WRITTEN = registered(
    lambda: Counter("forecourt_metric_points_written", "Points written to the metrics store."),
    "forecourt_metric_points_written_total",
)

_DECISIONS = {
    (subject, allowed): RATE_LIMIT_DECISIONS.labels(
        subject=subject, outcome="allowed" if allowed else "limited"
    )
    for subject in RATE_LIMIT_SUBJECTS
    for allowed in (True, False)
}
_PLUGIN_OUTCOMES = frozenset({"ok", "error", "timeout", "killed", "refused"})


def rate_limit_decided(subject: str, allowed: bool, window: str | None = None) -> None:
    """One decision on ``subject``'s bucket (``key``, ``user`` or ``ip``); a refusal also
    counts against the window that refused it (None: the backend, failing closed)."""
    _DECISIONS[(subject if subject in RATE_LIMIT_SUBJECTS else "ip", allowed)].inc()
    if not allowed:
        RATE_LIMIT_REJECTIONS.labels(window=window or "backend").inc()


def events_published(count: int) -> None:
    """``count`` new events were committed."""
    if count > 0:
        EVENTS_PUBLISHED.inc(count)


def metric_points_written(count: int) -> None:
    """``count`` points were written to the metrics store (called by its writer)."""
    if count > 0:
        METRIC_POINTS_WRITTEN.inc(count)


def plugin_ran(status: str, duration_ms: float) -> None:
    """A plugin run ended with ``status`` after ``duration_ms``: counted, timed, and
    recorded in the operation statistics."""
    PLUGIN_RUNS.labels(outcome=status if status in _PLUGIN_OUTCOMES else "error").inc()
    seconds = max(0.0, duration_ms / 1000)
    PLUGIN_RUN_SECONDS.observe(seconds)
    OPERATIONS.record(PLUGIN_RUN, seconds)


def status_class(status: int) -> str:
    """``"2xx"`` for 204; out-of-range codes count as server errors."""
    index = status // 100 - 1
    return STATUS_CLASSES[index] if 0 <= index < len(STATUS_CLASSES) else "5xx"
