"""Slack alert: posts ``{"text": ...}`` to the instance's incoming webhook for each event."""

from __future__ import annotations

import json
import string
from typing import Any

import forecourt_plugin

DEFAULT_TEMPLATE = "*$type* ($severity) $subject"
MAX_DATA_CHARS = 2000
TIMEOUT_S = 10
FIELDS = ("type", "severity", "subject", "source", "time", "id", "tenant")


def notify(payload: dict[str, Any]) -> dict[str, Any]:
    """Entry point: one Slack message for ``payload["event"]``."""
    config = forecourt_plugin.config()
    text = message_text(payload["event"], config)
    body = json.dumps({"text": text}).encode()
    try:
        response = forecourt_plugin.fetch(
            config["webhook_url"],
            method="POST",
            headers={"Content-Type": "application/json"},
            body=body,
            timeout=TIMEOUT_S,
        )
    except Exception as exc:  # the host reports refused or failed connections as exceptions
        forecourt_plugin.log("slack not reached", error=str(exc))
        return {"sent": False, "detail": f"Slack could not be reached: {exc}"}
    if 200 <= response.status < 300:
        return {"sent": True, "detail": f"Slack answered {response.status}"}
    answer = response.body[:200].decode(errors="replace")
    forecourt_plugin.log("slack refused the message", status=response.status, answer=answer)
    return {"sent": False, "detail": f"Slack answered {response.status}: {answer}"}


def message_text(event: dict[str, Any], config: dict[str, Any]) -> str:
    """The message for ``event``: the template filled in, then the data if asked for."""
    values = {name: str(event.get(name) or "") for name in FIELDS}
    values["severity"] = values["severity"] or "info"
    text = string.Template(config.get("template", DEFAULT_TEMPLATE)).safe_substitute(values)
    if config.get("include_data", True) and event.get("data") is not None:
        data = json.dumps(event["data"], indent=2, sort_keys=True, default=str)
        if len(data) > MAX_DATA_CHARS:
            data = data[:MAX_DATA_CHARS] + "\n…"
        text += f"\n```{data}```"
    return text.strip()
