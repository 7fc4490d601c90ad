"""Stream messages and their ids.

An id is ``<milliseconds>-<sequence>`` (the format of Redis stream ids), ordered by the pair:
the replay log gives each data message the next id, so ids increase in the order messages
were produced on every node.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from forecourt import codec
from forecourt.errors import InvalidInput

ID_PATTERN = re.compile(r"^(\d{1,15})-(\d{1,15})$")
MessageKey = tuple[int, int]
ZERO: MessageKey = (0, 0)

# Message types a client receives.
EVENT = "event"
DELIVERY_UPDATE = "delivery_update"
METRICS_UPDATE = "metrics_update"
EXECUTION_COMPLETE = "execution_complete"
ALERT = "alert"
HEARTBEAT = "heartbeat"
SUBSCRIBED = "subscribed"
UNSUBSCRIBED = "unsubscribed"
RESYNC = "resync"
ERROR = "error"


def parse_id(value: str, field_name: str = "last_id") -> MessageKey:
    """The ordering key of a message id; InvalidInput naming ``field_name`` if malformed."""
    match = ID_PATTERN.match(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise InvalidInput(
            "A message id is '<milliseconds>-<sequence>', as in the id of a message received.",
            field=field_name,
        )
    return int(match.group(1)), int(match.group(2))


def format_id(key: MessageKey) -> str:
    return f"{key[0]}-{key[1]}"


def now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


@dataclass(slots=True)
class StreamMessage:
    """A data message of one tenant on one channel family (``events``, ``deliveries``, ...).

    ``keys`` are what channel patterns are matched against (an event's type, a delivery's
    endpoint id, a plugin id and metric names); ``data`` holds the message's own fields.
    """

    type: str
    tenant_id: str
    family: str
    channel: str
    data: dict[str, Any]
    keys: tuple[str, ...] = ()
    timestamp: str = field(default_factory=now_iso)
    key: MessageKey = ZERO
    _text: str | None = None

    @property
    def id(self) -> str:
        return format_id(self.key)

    def text(self) -> str:
        """The message as a client receives it (JSON), encoded once for every subscriber."""
        if self._text is None:
            body = {
                "type": self.type,
                "id": self.id,
                "timestamp": self.timestamp,
                "channel": self.channel,
                **self.data,
            }
            self._text = codec.dumps_stored(body).decode()
        return self._text

    def stored(self) -> bytes:
        """The message as the replay log keeps it (without its id, which the log assigns)."""
        return codec.dumps_stored(
            {
                "t": self.type,
                "n": self.tenant_id,
                "f": self.family,
                "c": self.channel,
                "d": self.data,
                "k": list(self.keys),
                "ts": self.timestamp,
            }
        )

    @classmethod
    def from_stored(cls, raw: bytes | str, key: MessageKey) -> StreamMessage:
        # Written by ``stored`` on this or another node: an event's data at the codec's
        # depth limit sits deeper inside the message, so it is read back without that limit.
        value = codec.loads_stored(raw)
        return cls(
            type=value["t"],
            tenant_id=value["n"],
            family=value["f"],
            channel=value["c"],
            data=value["d"],
            keys=tuple(value["k"]),
            timestamp=value["ts"],
            key=key,
        )


def control(type: str, key: MessageKey, **fields: Any) -> str:
    """A message of the connection itself (``subscribed``, ``heartbeat``, ``error``, ...);
    its id is the connection's position in the stream, so resuming from it loses nothing."""
    body = {"type": type, "id": format_id(key), "timestamp": now_iso(), **fields}
    return codec.dumps_stored(body).decode()
