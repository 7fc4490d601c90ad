"""The exporters' formats, as pure functions (no sandbox, no network): StatsD lines and their
datagrams, the Pushgateway's exposition and push path, and what a manifest may declare as
``metrics_export``."""

from __future__ import annotations

import importlib.util
import itertools
import random
import types
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from forecourt.plugins.builtin import BUILTIN_DIR
from forecourt.plugins.manifest import semantic_problems


def load(name: str) -> types.ModuleType:
    path = BUILTIN_DIR / name / "plugin.py"
    spec = importlib.util.spec_from_file_location(f"exporter_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


statsd = load("statsd_export")
pushgateway = load("pushgateway_export")


def series(name: str, points: list[list[float]], **labels: str) -> dict[str, Any]:
    return {"name": name, "labels": labels, "source": "pin_1", "points": points}


def test_statsd_lines_carry_type_tags_rate_and_time() -> None:
    batch = [
        series("app.latency_s", [[1_000, 0.5], [2_000, 2.0]], route="/a b,c|d#e@f", env="prod"),
        series("jobs.done", [[3_000, 3.0]]),
        series("app.delta", [[4_000, -1.5]]),
    ]
    config = {"prefix": "fc.", "counts": ["jobs.*"], "timestamps": True}
    assert statsd.statsd_lines(batch, config) == [
        b"fc.app.latency_s:0.5|g|#env:prod,route:/a_b_c_d_e_f,source:pin_1|T1",
        b"fc.app.latency_s:2|g|#env:prod,route:/a_b_c_d_e_f,source:pin_1|T2",
        b"fc.jobs.done:3|c|#source:pin_1|T3",
        b"fc.app.delta:0|g|#source:pin_1|T4",  # a negative gauge is set, not decremented
        b"fc.app.delta:-1.5|g|#source:pin_1|T4",
    ]
    assert statsd.statsd_lines(batch[1:2], {"tags": False}) == [b"jobs.done:3|g"]


def test_statsd_sampling_marks_the_rate_and_sends_a_share() -> None:
    random.seed(7)
    batch = [series("hits", [[i, 1.0] for i in range(1000)])]
    lines = statsd.statsd_lines(batch, {"sample_rate": 0.25, "tags": False})
    assert all(line == b"hits:1|g|@0.25" for line in lines)
    assert 150 < len(lines) < 350  # a quarter of 1,000, loosely


@pytest.mark.parametrize("limit", [512, 1432, 8192])
def test_datagrams_hold_whole_lines_under_the_size(limit: int) -> None:
    lines = [f"metric.{i}:{i}|g|#k:{'v' * (i % 50)}".encode() for i in range(2000)]
    datagrams = statsd.pack(lines, limit)
    assert all(len(d) <= limit for d in datagrams)
    assert b"\n".join(datagrams).split(b"\n") == lines  # every line once, in order
    # Each datagram is full: the next line would not have fit.
    for datagram, following in itertools.pairwise(datagrams):
        assert len(datagram) + 1 + len(following.split(b"\n")[0]) > limit


def test_a_line_over_the_size_is_left_out() -> None:
    assert statsd.pack([b"a:1|g", b"x" * 600, b"b:2|g"], 512) == [b"a:1|g\nb:2|g"]


def test_the_exposition_parses_back_with_every_label_value_intact() -> None:
    tricky = 'say "hi" \\ then\nnewline, é'
    batch = [
        series("app.latency_s", [[1, 0.5], [2, 0.75]], route=tricky),
        {**series("app.latency_s", [], route="/b"), "last": [5, 2.0]},  # no new point
        series("jobs.done", [[3, 42.0]], queue="mail", instance="x", __meta="m"),
        series("9lives", [[4, 1e-300]]),
    ]
    text = pushgateway.exposition(
        batch, {"prefix": "fc_", "counts": ["jobs.*"], "grouping": {"instance": "a"}}
    )
    parsed = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert parsed == {
        ("fc_app_latency_s", frozenset({("route", tricky), ("source", "pin_1")})): 0.75,
        ("fc_app_latency_s", frozenset({("route", "/b"), ("source", "pin_1")})): 2.0,
        (
            "fc_jobs_done_total",
            frozenset({("queue", "mail"), ("label__meta", "m"), ("source", "pin_1")}),
        ): 42.0,
        ("fc_9lives", frozenset({("source", "pin_1")})): 1e-300,
    }
    assert "# TYPE fc_jobs_done_total counter\n" in text
    assert "# TYPE fc_app_latency_s gauge\n" in text
    assert pushgateway.exposition([series("a", [])], {}) == ""


def test_the_push_path_encodes_what_a_path_cannot_hold() -> None:
    config = {
        "url": "http://gw:9091/",
        "job": "nightly jobs",
        "grouping": {"instance": "node/1", "zone": "", "dc": "eu-1"},
    }
    assert pushgateway.push_url(config) == (
        "http://gw:9091/metrics/job/nightly%20jobs/dc/eu-1/instance@base64/bm9kZS8x/zone@base64/="
    )


def manifest(**permissions: Any) -> dict[str, Any]:
    return {
        "id": "com.example.exporter",
        "name": "Exporter",
        "version": "1.0.0",
        "type": "export",
        "entry_point": "plugin:export",
        "permissions": permissions,
        "config_schema": {
            "type": "object",
            "required": ["url"],
            "properties": {"url": {"type": "string"}, "other": {"type": "string"}},
        },
    }


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (manifest(metrics_export="url"), "required for metrics_export"),
        (manifest(metrics_export="nope", schedule_interval_s=60), "must name a property"),
        (manifest(metrics_export="other", schedule_interval_s=60), "must require 'other'"),
        ({**manifest(metrics_export="url", schedule_interval_s=60), "type": "hook"}, "only export"),
        (manifest(schedule_interval_s=60), "only collectors and metrics exporters"),
    ],
)
def test_metrics_export_is_checked_in_the_manifest(raw: dict[str, Any], message: str) -> None:
    problems = semantic_problems(raw)
    assert any(message in p["message"] for p in problems), problems


def test_a_metrics_exporter_manifest_passes() -> None:
    raw = manifest(metrics_export="url", schedule_interval_s=60)
    assert semantic_problems(raw) == []
