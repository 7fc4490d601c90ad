"""CSV export: records to CSV or TSV text, nested values as JSON."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import forecourt_plugin

DELIMITERS = {"csv": ",", "tsv": "\t"}
MEDIA_TYPES = {"csv": "text/csv", "tsv": "text/tab-separated-values"}
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def export(payload: dict[str, Any]) -> dict[str, Any]:
    """Entry point: ``payload["records"]`` as a CSV (or TSV) document."""
    config = forecourt_plugin.config()
    kind = payload.get("format", "csv")
    if kind not in DELIMITERS:
        raise ValueError(f"csv export writes csv or tsv, not {kind!r}")
    records = payload["records"]
    columns = config.get("columns") or _columns(records)
    escape = config.get("escape_formulas", True)
    out = io.StringIO()
    writer = csv.writer(out, delimiter=DELIMITERS[kind], lineterminator="\r\n")
    if config.get("include_header", True):
        writer.writerow([_cell(column, escape) for column in columns])
    for record in records:
        writer.writerow([_cell(record.get(column), escape) for column in columns])
    return {"media_type": MEDIA_TYPES[kind], "content": out.getvalue(), "encoding": "utf-8"}


def _columns(records: list[dict[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for record in records:
        seen.update(dict.fromkeys(record))
    return list(seen)


def _cell(value: Any, escape: bool) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (dict, list)):
        text = json.dumps(value, separators=(",", ":"), sort_keys=True)
    else:
        text = str(value)
    if escape and text.startswith(FORMULA_STARTS) and not _is_number(text):
        return "'" + text
    return text


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
