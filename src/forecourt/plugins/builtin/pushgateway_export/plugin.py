"""Pushgateway export: the latest value of each series of a batch, in the Prometheus text
exposition format (0.0.4), pushed with ``forecourt_plugin.fetch`` to
``/metrics/job/<job>{/<label>/<value>}``.

Names: dots and other characters Prometheus does not take become ``_``; a counter's ends in
``_total``. Labels: the series'
labels plus its ``source``, names made valid the same way, values escaped (``\\``, ``"``,
newline); grouping labels (and ``job``) are the group's, so a series label of the same name is
left out. Path segments are base64url-encoded (``<name>@base64/<value>``) when they hold a
``/`` or are empty, percent-encoded otherwise. A push replaces whole metric families, so each
family pushed has all its series: those without a point in the run with their ``last`` value.
"""

from __future__ import annotations

import base64
import fnmatch
import re
from typing import Any
from urllib.parse import quote

import forecourt_plugin

TIMEOUT_S = 20
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_:]")
_LABEL_UNSAFE = re.compile(r"[^A-Za-z0-9_]")


def export(payload: dict[str, Any]) -> dict[str, Any]:
    """Entry point: a scheduled batch (``series``) or, run from the API, ``records`` of
    ``{"name", "value", "labels"?}``."""
    config = forecourt_plugin.config()
    series = payload["series"] if "series" in payload else records_as_series(payload["records"])
    body = exposition(series, config)
    if not body:
        return {"media_type": "text/plain", "content": "nothing to push\n", "encoding": "utf-8"}
    url = push_url(config)
    try:
        response = forecourt_plugin.fetch(
            url,
            method=config.get("method", "POST"),
            headers={"Content-Type": CONTENT_TYPE},
            body=body.encode(),
            timeout=TIMEOUT_S,
        )
    except forecourt_plugin.FetchError as exc:  # the run fails: its points come again
        raise RuntimeError(f"the Pushgateway was not reached: {exc}") from None
    if not 200 <= response.status < 300:
        raise RuntimeError(f"the Pushgateway answered {response.status}: {response.text[:500]}")
    samples = sum(1 for line in body.splitlines() if not line.startswith("#"))
    summary = f"pushed {samples} samples to {url}"
    forecourt_plugin.log(summary)
    return {"media_type": "text/plain", "content": summary + "\n", "encoding": "utf-8"}


def records_as_series(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """API records as series of one point each."""
    return [
        {
            "name": str(record["name"]),
            "labels": {str(k): str(v) for k, v in (record.get("labels") or {}).items()},
            "points": [[record.get("ts_ms"), float(record["value"])]],
        }
        for record in records
    ]


def push_url(config: dict[str, Any]) -> str:
    """The group's URL: base, ``/metrics/job/<job>``, then each grouping label."""
    path = "/metrics/" + segment("job", str(config.get("job", "forecourt")))
    for name, value in sorted((config.get("grouping") or {}).items()):
        path += "/" + segment(name, str(value))
    return str(config["url"]).rstrip("/") + path


def segment(name: str, value: str) -> str:
    """``name/value`` for the push path, the value base64url-encoded when it must be."""
    if value == "" or "/" in value:
        return f"{name}@base64/{base64.urlsafe_b64encode(value.encode()).decode() or '='}"
    return f"{name}/{quote(value, safe='')}"


def exposition(series: list[dict[str, Any]], config: dict[str, Any]) -> str:
    """The text format: per metric family its ``# TYPE`` line and one sample per series (its
    last point in the run, else its latest stored one)."""
    prefix = str(config.get("prefix", ""))
    counts = [str(p) for p in config.get("counts", [])]
    reserved = {"job", *(config.get("grouping") or {})}
    by_family: dict[str, dict[str, str]] = {}
    kinds: dict[str, str] = {}
    for item in series:
        latest = item["points"][-1] if item["points"] else item.get("last")
        if latest is None:
            continue
        kind = "counter" if any(fnmatch.fnmatchcase(item["name"], p) for p in counts) else "gauge"
        name = metric_name(prefix + item["name"])
        if kind == "counter" and not name.endswith("_total"):
            name += "_total"  # what Prometheus and OpenMetrics name a counter
        kinds.setdefault(name, kind)
        labels = dict(item.get("labels") or {})
        if item.get("source") and "source" not in labels:
            labels["source"] = item["source"]
        pairs: dict[str, str] = {}
        for key, value in sorted(labels.items()):
            label = label_name(str(key))
            if label not in reserved:
                pairs[label] = str(value)
        rendered = ",".join(f'{k}="{escape(v)}"' for k, v in sorted(pairs.items()))
        sample = f"{name}{{{rendered}}}" if rendered else name
        by_family.setdefault(name, {})[sample] = number(latest[1])
    lines = []
    for name in sorted(by_family):
        lines.append(f"# TYPE {name} {kinds[name]}")
        lines += [f"{sample} {value}" for sample, value in by_family[name].items()]
    return "".join(line + "\n" for line in lines)


def metric_name(name: str) -> str:
    """A valid Prometheus metric name."""
    cleaned = _NAME_UNSAFE.sub("_", name)
    return cleaned if not cleaned[:1].isdigit() else "_" + cleaned


def label_name(name: str) -> str:
    """A valid label name, never one Prometheus reserves (``__``)."""
    cleaned = _LABEL_UNSAFE.sub("_", name)
    if cleaned[:1].isdigit():
        cleaned = "_" + cleaned
    return "label" + cleaned if cleaned.startswith("__") else cleaned


def escape(value: str) -> str:
    """A label value in the text format: backslash, double quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def number(value: float) -> str:
    """A sample value as Go's strconv reads it back exactly."""
    value = float(value)
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)
