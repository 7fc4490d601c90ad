"""Channels a client may join, the scope each needs, and which messages each takes.

=========================  ==================  ===========================================
channel                    scope               messages
=========================  ==================  ===========================================
``events[:<pattern>]``     ``events:read``     ``event``; type pattern as webhooks take it
                                               (``order.created``, ``order.*``, ``*``)
``deliveries[:<id>]``      ``deliveries:read`` ``delivery_update``, of one endpoint or all
``metrics[:<pattern>]``    ``metrics:read``    ``metrics_update`` of a plugin id, or with a
                                               series name matching (``system.cpu.*``)
``executions[:<id>]``      ``plugins:read``    ``execution_complete`` of one plugin or all
``alerts``                 ``alerts:read``     ``alert``, as ``/api/v1/alerts`` shows it
=========================  ==================  ===========================================
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from forecourt.errors import Forbidden, InvalidInput
from forecourt.streams.messages import StreamMessage
from forecourt.webhooks.fanout import TYPE_PATTERN, type_matches

EVENTS = "events"
DELIVERIES = "deliveries"
METRICS = "metrics"
EXECUTIONS = "executions"
ALERTS = "alerts"

SCOPES: dict[str, str] = {
    EVENTS: "events:read",
    DELIVERIES: "deliveries:read",
    METRICS: "metrics:read",
    EXECUTIONS: "plugins:read",
    ALERTS: "alerts:read",
}
MAX_CHANNEL_CHARS = 4000
ID_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
METRIC_PATTERN = re.compile(r"^[A-Za-z0-9_.:*?-]{1,200}$")
_ONE = (
    r"(events(:(\*|[a-z0-9_]+(\.[a-z0-9_]+)*(\.\*)?))?"
    r"|deliveries(:[A-Za-z0-9_.-]{1,100})?|executions(:[A-Za-z0-9_.-]{1,100})?"
    r"|metrics(:[A-Za-z0-9_.:*?-]{1,200})?|alerts)"
)
# A comma-separated list of channels, as the event stream's query takes it (the pattern of the
# OpenAPI document: what it accepts, the route accepts).
LIST_PATTERN = f"^{_ONE}(,{_ONE}){{0,49}}$"


@dataclass(frozen=True, slots=True)
class Channel:
    """A parsed channel name: its family and what follows the colon (None: everything)."""

    family: str
    selector: str | None

    @property
    def name(self) -> str:
        return self.family if self.selector is None else f"{self.family}:{self.selector}"

    @property
    def scope(self) -> str:
        return SCOPES[self.family]

    def matches(self, message: StreamMessage) -> bool:
        if message.family != self.family:
            return False
        selector = self.selector
        if selector is None:
            return True
        if self.family == EVENTS:
            return type_matches((selector,), message.keys[0] if message.keys else "")
        if self.family == METRICS:
            return any(fnmatchcase(key, selector) for key in message.keys)
        return selector in message.keys


def parse(name: object, field: str = "channels") -> Channel:
    """The channel ``name`` names; InvalidInput (naming ``field``) if it names none."""
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_CHANNEL_CHARS:
        raise InvalidInput(
            f"A channel is a string of 1 to {MAX_CHANNEL_CHARS} characters.", field=field
        )
    family, colon, selector = name.partition(":")
    if family not in SCOPES:
        raise InvalidInput(
            f"Unknown channel {name!r}: channels are {', '.join(sorted(SCOPES))}, "
            "some followed by ':<filter>' (see docs/streams.md).",
            field=field,
            code="unknown_channel",
        )
    if not colon or (selector in ("", "*") and family != EVENTS):
        return Channel(family, None)
    if family == ALERTS:
        raise InvalidInput(
            "The alerts channel takes no filter.", field=field, code="unknown_channel"
        )
    if family == EVENTS:
        if not TYPE_PATTERN.match(selector):
            raise InvalidInput(
                f"{name!r}: an events channel takes an event type or a wildcard "
                "(events:order.created, events:order.*, events:*).",
                field=field,
                code="unknown_channel",
            )
        return Channel(family, None if selector == "*" else selector)
    pattern = METRIC_PATTERN if family == METRICS else ID_PATTERN
    if not pattern.match(selector):
        raise InvalidInput(
            f"{name!r}: the filter after '{family}:' is not an id"
            + (" or a series name pattern." if family == METRICS else "."),
            field=field,
            code="unknown_channel",
        )
    return Channel(family, selector)


def parse_all(names: object, scopes: Iterable[str], field: str = "channels") -> list[Channel]:
    """Every channel of ``names`` (a list), checked against the caller's ``scopes``: all of
    them or an error (InvalidInput or Forbidden), so a refused request changes nothing."""
    if not isinstance(names, list) or not names:
        raise InvalidInput("channels is a non-empty list of channel names.", field=field)
    held = set(scopes)
    channels = []
    for i, name in enumerate(names):
        channel = parse(name, f"{field}.{i}")
        if channel.scope not in held:
            raise Forbidden(
                f"The channel {channel.name!r} needs the {channel.scope!r} scope.",
                required_scope=channel.scope,
                code="forbidden_channel",
            )
        channels.append(channel)
    return channels


def for_plugins(plugin_ids: object, field: str = "plugin_ids") -> list[str]:
    """The channels of the older ``{"plugin_ids": [...]}`` form: each plugin's metrics and
    executions."""
    if not isinstance(plugin_ids, list) or not plugin_ids:
        raise InvalidInput("plugin_ids is a non-empty list of plugin ids.", field=field)
    names: list[str] = []
    for i, plugin_id in enumerate(plugin_ids):
        if not isinstance(plugin_id, str) or not ID_PATTERN.match(plugin_id):
            raise InvalidInput(
                "A plugin id is 1 to 100 letters, digits, '_', '.', '-'.", field=f"{field}.{i}"
            )
        names += [f"{METRICS}:{plugin_id}", f"{EXECUTIONS}:{plugin_id}"]
    return names


def names(channels: Sequence[Channel]) -> list[str]:
    return [c.name for c in channels]
