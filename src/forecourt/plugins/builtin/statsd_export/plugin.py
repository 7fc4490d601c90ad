"""StatsD export: a batch of series as DogStatsD lines, in UDP datagrams, through the egress
proxy (``forecourt_plugin.send_datagrams``).

A line is ``name:value|g`` (or ``|c``), then ``|@rate`` when sampling, ``|#k:v,k2:v2`` with
tags and ``|T<seconds>`` with timestamps. A negative gauge goes after a ``name:0|g`` line:
plain StatsD reads a signed gauge as a change, not a value. Lines are joined by newlines into
datagrams of at most ``max_datagram_bytes``.
"""

from __future__ import annotations

import fnmatch
import random
import re
from typing import Any

import forecourt_plugin

DEFAULT_DATAGRAM_BYTES = 1432
SEND_CHUNK = 500  # datagrams per send_datagrams call (the proxy takes up to 1,000)
_TAG_UNSAFE = re.compile(r"[\s,|#:@]")  # what would end a tag or a line early
_TAG_VALUE_UNSAFE = re.compile(r"[\s,|#@]")  # a value may hold ':' (k:v splits at the first)
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")


def export(payload: dict[str, Any]) -> dict[str, Any]:
    """Entry point: a scheduled batch (``series``) or, run from the API, ``records`` of
    ``{"name", "value", "labels"?, "ts_ms"?}``."""
    config = forecourt_plugin.config()
    series = payload["series"] if "series" in payload else records_as_series(payload["records"])
    lines = statsd_lines(series, config)
    datagrams = pack(lines, int(config.get("max_datagram_bytes", DEFAULT_DATAGRAM_BYTES)))
    for start in range(0, len(datagrams), SEND_CHUNK):
        try:
            forecourt_plugin.send_datagrams(
                config["address"], datagrams[start : start + SEND_CHUNK]
            )
        except forecourt_plugin.FetchError as exc:  # the run fails: its points come again
            raise RuntimeError(f"{config['address']} was not reached: {exc}") from None
    summary = f"sent {len(lines)} lines in {len(datagrams)} datagrams to {config['address']}"
    forecourt_plugin.log(summary)
    return {"media_type": "text/plain", "content": summary + "\n", "encoding": "utf-8"}


def records_as_series(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """API records as series of one point each."""
    series = []
    for record in records:
        point = [record.get("ts_ms"), float(record["value"])]
        labels = {str(k): str(v) for k, v in (record.get("labels") or {}).items()}
        series.append({"name": str(record["name"]), "labels": labels, "points": [point]})
    return series


def statsd_lines(series: list[dict[str, Any]], config: dict[str, Any]) -> list[bytes]:
    """One line per point (two for a negative gauge), in the batch's order."""
    prefix = str(config.get("prefix", ""))
    counts = [str(p) for p in config.get("counts", [])]
    tagged = bool(config.get("tags", True))
    stamped = bool(config.get("timestamps", False))
    rate = float(config.get("sample_rate", 1))
    lines: list[bytes] = []
    for item in series:
        name = _NAME_UNSAFE.sub("_", prefix + item["name"])
        kind = "c" if any(fnmatch.fnmatchcase(item["name"], p) for p in counts) else "g"
        tail = f"|@{rate:g}" if rate < 1 else ""
        if tagged:
            tail += "|#" + ",".join(tags(item))
        for ts_ms, value in item["points"]:
            if rate < 1 and random.random() >= rate:
                continue
            stamp = f"|T{int(ts_ms) // 1000}" if stamped and ts_ms is not None else ""
            if kind == "g" and value < 0:
                lines.append(f"{name}:0|g{tail}{stamp}".encode())
            lines.append(f"{name}:{number(value)}|{kind}{tail}{stamp}".encode())
    return lines


def tags(item: dict[str, Any]) -> list[str]:
    """The series' labels as ``k:v`` tags, sorted, and its source as ``source:...``."""
    labels = dict(item.get("labels") or {})
    if item.get("source") and "source" not in labels:
        labels["source"] = item["source"]
    return [
        f"{_TAG_UNSAFE.sub('_', k)}:{_TAG_VALUE_UNSAFE.sub('_', str(v))}"
        for k, v in sorted(labels.items())
    ]


def number(value: float) -> str:
    """The shortest text that reads back as ``value``."""
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


def pack(lines: list[bytes], limit: int) -> list[bytes]:
    """``lines`` joined by newlines into datagrams of at most ``limit`` bytes; a line longer
    than ``limit`` by itself is left out (and logged)."""
    datagrams: list[bytes] = []
    current = b""
    for line in lines:
        if len(line) > limit:
            forecourt_plugin.log("line over the datagram size left out", line=line[:200].decode())
            continue
        if current and len(current) + 1 + len(line) > limit:
            datagrams.append(current)
            current = b""
        current = current + b"\n" + line if current else line
    if current:
        datagrams.append(current)
    return datagrams
