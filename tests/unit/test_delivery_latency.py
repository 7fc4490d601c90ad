"""The delivery latency histogram's start and ends: a delivery id made by ``new_id`` gives its
creation time to the millisecond; only final states are observed, never a retry; a clock
behind the id's counts zero, not a negative duration."""

from __future__ import annotations

import time

from prometheus_client import REGISTRY

from forecourt.ids import new_id
from forecourt.webhooks.latency import created_s, delivery_ended
from forecourt.webhooks.models import FAILED, RETRYING, SUCCEEDED

NAME = "forecourt_delivery_latency_seconds"


def sample(suffix: str, outcome: str) -> float:
    return REGISTRY.get_sample_value(f"{NAME}_{suffix}", {"outcome": outcome}) or 0.0


def test_the_id_gives_its_creation_time() -> None:
    before = time.time_ns() // 1_000_000
    made = created_s(new_id("dlv"))
    after = time.time_ns() // 1_000_000
    assert made is not None
    assert before <= round(made * 1000) <= after


def test_an_id_new_id_did_not_make_has_no_time() -> None:
    assert created_s("dlv") is None
    assert created_s("dlv_short") is None
    assert created_s("dlv_!!!!!!!!!!0000000000000000") is None
    assert created_s("dlv_01jd3xq7m4k2z8w9y6v5t4s3r2") is None  # lower case is not Crockford


def test_final_states_are_observed_once_from_the_creation() -> None:
    delivery_id = new_id("dlv")
    made = created_s(delivery_id)
    assert made is not None
    counts = {outcome: sample("count", outcome) for outcome in (SUCCEEDED, FAILED)}
    sums = {outcome: sample("sum", outcome) for outcome in (SUCCEEDED, FAILED)}

    delivery_ended(delivery_id, RETRYING, now_s=made + 5)
    assert {o: sample("count", o) for o in counts} == counts

    delivery_ended(delivery_id, SUCCEEDED, now_s=made + 90)
    assert sample("count", SUCCEEDED) == counts[SUCCEEDED] + 1
    assert abs(sample("sum", SUCCEEDED) - sums[SUCCEEDED] - 90) < 1e-6

    delivery_ended(delivery_id, FAILED, now_s=made - 2)  # this node's clock is behind
    assert sample("count", FAILED) == counts[FAILED] + 1
    assert sample("sum", FAILED) == sums[FAILED]
