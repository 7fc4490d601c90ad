"""JSON export: records as a JSON array or as newline-delimited JSON."""

from __future__ import annotations

import json
from typing import Any

import forecourt_plugin

MEDIA_TYPES = {"json": "application/json", "ndjson": "application/x-ndjson"}
DEFAULT_INDENT = 2


def export(payload: dict[str, Any]) -> dict[str, Any]:
    """Entry point: ``payload["records"]`` as a JSON (or NDJSON) document."""
    config = forecourt_plugin.config()
    kind = payload.get("format", "json")
    if kind not in MEDIA_TYPES:
        raise ValueError(f"json export writes json or ndjson, not {kind!r}")
    records = payload["records"]
    sort_keys = bool(config.get("sort_keys", False))
    if kind == "ndjson":
        lines = (json.dumps(r, sort_keys=sort_keys, ensure_ascii=False) for r in records)
        content = "".join(line + "\n" for line in lines)
    else:
        indent = config.get("indent", DEFAULT_INDENT) or None
        content = json.dumps(records, indent=indent, sort_keys=sort_keys, ensure_ascii=False)
    return {"media_type": MEDIA_TYPES[kind], "content": content, "encoding": "utf-8"}
