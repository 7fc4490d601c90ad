"""Delivery latency as a receiver's owner sees it: from the event's acceptance to the end of
its delivery to one endpoint, retries included.

``forecourt_delivery_latency_seconds{outcome="succeeded"|"failed"}`` is observed once per
delivery, when it reaches a final state: ``succeeded`` when an attempt is answered 2xx,
``failed`` when a final answer, the last retry, or a body that cannot be built ends it. A
retry is not an end and is not observed. (``forecourt_webhook_attempt_seconds`` in
``delivery`` times each HTTP exchange alone.)

Where the start comes from: a delivery row is written in the transaction that accepts its
event (``fanout.delivery_rows``, with the event's ``created_at``), and its id is made then by
``forecourt.ids.new_id``, whose first ten characters after the prefix are that moment in epoch
milliseconds. So the worker that ends a delivery knows when its event was accepted without
reading anything more, whether it claimed the delivery from the queue or the publisher handed
it over in memory. A delivery of the "test endpoint" probe counts from the probe's request.
"""

from __future__ import annotations

import time

from prometheus_client import Histogram

from forecourt.observability.registry import registered
from forecourt.webhooks.models import FAILED, SUCCEEDED

# From a delivery handed over in memory and answered at once (~10 ms) to one that succeeds
# on the last retry of the default schedule (about 28 hours, jittered).
LATENCY_BUCKETS_S = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
    1_800.0, 3_600.0, 7_200.0, 18_000.0, 36_000.0, 86_400.0, 172_800.0,
)  # fmt: skip
OUTCOMES = (SUCCEEDED, FAILED)

# forecourt.ids: "<prefix>_" then 10 Crockford base-32 digits of the creation time (ms).
_DIGITS = {digit: value for value, digit in enumerate("0123456789ABCDEFGHJKMNPQRSTVWXYZ")}
_TIME_DIGITS = 10

DELIVERY_LATENCY = registered(
    lambda: Histogram(
        "forecourt_delivery_latency_seconds",
        "Time from an event's acceptance to the end of its delivery to an endpoint "
        "(retries included), by how the delivery ended.",
        ["outcome"],
        buckets=LATENCY_BUCKETS_S,
    ),
    "forecourt_delivery_latency_seconds",
)
"""``forecourt_delivery_latency_seconds{outcome="succeeded"|"failed"}``."""

# Both children exist from the start, so a scrape shows each outcome (at 0) before it happens.
_BY_OUTCOME = {outcome: DELIVERY_LATENCY.labels(outcome=outcome) for outcome in OUTCOMES}


def created_s(delivery_id: str) -> float | None:
    """When ``delivery_id`` was made, in epoch seconds; None for an id ``new_id`` did not
    make."""
    _, _, suffix = delivery_id.partition("_")
    if len(suffix) < _TIME_DIGITS:
        return None
    millis = 0
    for digit in suffix[:_TIME_DIGITS]:
        value = _DIGITS.get(digit)
        if value is None:
            return None
        millis = millis * 32 + value
    return millis / 1000


def delivery_ended(delivery_id: str, status: str, now_s: float | None = None) -> None:
    """Observe the latency of a delivery that reached ``status``; nothing unless that state
    is final (``succeeded`` or ``failed``). ``now_s``: epoch seconds (default: now)."""
    child = _BY_OUTCOME.get(status)
    if child is None:
        return
    accepted = created_s(delivery_id)
    if accepted is None:
        return
    ended = time.time() if now_s is None else now_s
    # Another node's clock may run a little ahead of this one's.
    child.observe(max(0.0, ended - accepted))
