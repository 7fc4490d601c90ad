"""What a WebSocket client may send, checked: one JSON object per text message.

``{"action": "subscribe", "channels": [...]}`` (or the older ``"plugin_ids": [...]``),
``{"action": "unsubscribe", "channels": [...]}``, ``{"action": "resume", "last_id": "...",
"channels": [...]}`` (channels optional) and ``{"action": "ping"}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from forecourt import codec
from forecourt.errors import InvalidInput
from forecourt.streams import channels as ch

ACTIONS = ("subscribe", "unsubscribe", "resume", "ping")


@dataclass(frozen=True, slots=True)
class ClientMessage:
    action: str
    channels: list[str] = field(default_factory=list)
    last_id: str | None = None


def parse(text: str, max_bytes: int) -> ClientMessage:
    """The client's message; InvalidInput (with a ``code``) naming what is wrong."""
    try:
        value: Any = codec.loads(text, field="message", max_bytes=max_bytes)
    except InvalidInput as exc:
        raise InvalidInput(
            f"The message is not JSON: {exc.detail}", field="message", code="malformed_message"
        ) from None
    if not isinstance(value, dict):
        raise InvalidInput(
            'A message is a JSON object such as {"action": "subscribe", "channels": [...]}.',
            field="message",
            code="malformed_message",
        )
    action = value.get("action")
    if action not in ACTIONS:
        raise InvalidInput(
            f"Unknown action {action!r}: actions are {', '.join(ACTIONS)}.",
            field="action",
            code="unknown_action",
        )
    names: list[str] = []
    if action == "subscribe" and "plugin_ids" in value and "channels" not in value:
        names = ch.for_plugins(value["plugin_ids"])
    elif action in ("subscribe", "unsubscribe") or (action == "resume" and "channels" in value):
        raw = value.get("channels")
        if not isinstance(raw, list) or not raw or not all(isinstance(n, str) for n in raw):
            raise InvalidInput(
                "channels is a non-empty list of channel names.",
                field="channels",
                code="malformed_message",
            )
        names = raw
    last_id = None
    if action == "resume":
        last_id = value.get("last_id")
        if not isinstance(last_id, str):
            raise InvalidInput(
                "last_id is the id (a string) of the last message received.",
                field="last_id",
                code="invalid_last_id",
            )
    return ClientMessage(action, names, last_id)
