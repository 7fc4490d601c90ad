"""The API a Forecourt plugin uses from inside its sandbox.

A plugin's entry point is a function called as ``function(input)``; what it returns (any
JSON value) is the call's output, and an exception it raises makes the call fail with that
exception's class and message. During a call it may use::

    import forecourt_plugin as fp

    fp.config()                      # this instance's configuration (a dict)
    fp.log("exported", rows=12)      # a line in the call's logs
    fp.metric("rows", 12, {"table": "orders"})
    fp.emit("export.finished", {"rows": 12}, subject="orders")
    fp.fetch("https://api.example.com/v1/items").json()
    fp.send_datagrams("statsd.example.com:8125", [b"orders:1|c"])

``print`` and anything written to stdout or stderr also end up in the call's logs (truncated).
``fetch`` reaches only the hosts the plugin declared, through Forecourt's egress proxy; the
sandbox has no other network. Outside a sandbox (a plugin's own unit tests) ``config()`` is
empty, metrics and events are kept in memory and ``fetch`` raises :class:`NotAvailable`.

This module runs inside the sandbox, so it uses the standard library only.
"""

from __future__ import annotations

import base64
import json
import math
import socket
import sys
from dataclasses import dataclass, field
from typing import Any

from forecourt_plugin import _wire

__all__ = [
    "EgressRefused",
    "FetchError",
    "NotAvailable",
    "Response",
    "config",
    "connection_token",
    "emit",
    "fetch",
    "log",
    "metric",
    "send_datagrams",
]

MAX_METRICS_PER_CALL = 1000
MAX_EVENTS_PER_CALL = 1000
MAX_NAME_CHARS = 200  # metric names and event types
FETCH_TIMEOUT_S = 10.0
MAX_FETCH_TIMEOUT_S = 60.0
MAX_DATAGRAM_BYTES = 8192  # the egress proxy's bounds, checked here first for a clear error
MAX_DATAGRAMS_PER_CALL = 1000
DATAGRAM_TIMEOUT_S = 10.0
EGRESS_GRACE_S = 5.0  # on top of a fetch's own timeout, for the proxy to answer


class NotAvailable(Exception):
    """The facility is not available to this plugin (here, or not yet)."""


class FetchError(Exception):
    """A request made with :func:`fetch` could not be completed."""


class EgressRefused(FetchError):
    """The egress proxy refused the request: the host was not declared or is not allowed."""


@dataclass(frozen=True)
class Response:
    """An HTTP response received through the egress proxy."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)

    @property
    def text(self) -> str:
        """The body decoded as UTF-8 (undecodable bytes replaced)."""
        return self.body.decode("utf-8", "replace")


@dataclass
class _Call:
    config: dict[str, Any] = field(default_factory=dict)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)


_current = _Call()
_egress_socket: str | None = None


def config() -> dict[str, Any]:
    """This plugin instance's configuration for the current call (a copy)."""
    copied: dict[str, Any] = json.loads(json.dumps(_current.config))
    return copied


def log(message: str, **fields: Any) -> None:
    """Write one line to the call's logs: the message, then ``key=value`` for each field."""
    parts = [str(message)]
    parts += [f"{key}={json.dumps(value, default=str)}" for key, value in fields.items()]
    sys.stderr.write(" ".join(parts).replace("\n", " ") + "\n")


def metric(name: str, value: float, labels: dict[str, str] | None = None) -> None:
    """Record a measurement; Forecourt stores it as a time series point when the call ends."""
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_CHARS:
        raise ValueError(f"a metric name is a string of 1 to {MAX_NAME_CHARS} characters")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError("a metric value is a finite number")
    labels = dict(labels or {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        raise ValueError("metric labels map strings to strings")
    if len(_current.metrics) >= MAX_METRICS_PER_CALL:
        raise ValueError(f"a call may record at most {MAX_METRICS_PER_CALL} metrics")
    _current.metrics.append({"name": name, "value": value, "labels": labels})


def emit(type: str, data: Any, subject: str | None = None) -> None:
    """Publish an event (``type``, JSON ``data``, optional ``subject``) when the call ends."""
    if not isinstance(type, str) or not 0 < len(type) <= MAX_NAME_CHARS:
        raise ValueError(f"an event type is a string of 1 to {MAX_NAME_CHARS} characters")
    if subject is not None and not isinstance(subject, str):
        raise ValueError("an event subject is a string")
    if len(_current.events) >= MAX_EVENTS_PER_CALL:
        raise ValueError(f"a call may emit at most {MAX_EVENTS_PER_CALL} events")
    event: dict[str, Any] = {"type": type, "data": json.loads(json.dumps(data, allow_nan=False))}
    if subject is not None:
        event["subject"] = subject
    _current.events.append(event)


def fetch(
    url: str,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes | str | None = None,
    timeout: float = FETCH_TIMEOUT_S,
) -> Response:
    """Make an HTTP request through Forecourt's egress proxy.

    Only hosts the plugin declared are reachable, and only at addresses Forecourt's SSRF guard
    allows; redirects are returned, not followed. Raises :class:`EgressRefused` when the proxy
    refuses, :class:`FetchError` when the request fails, :class:`NotAvailable` when the plugin
    declared no hosts.
    """
    if _egress_socket is None:
        raise NotAvailable("this plugin declared no network hosts, so it has no network")
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError("timeout is a number of seconds")
    if not math.isfinite(timeout):
        raise ValueError("timeout must be a finite number of seconds")
    timeout = min(max(float(timeout), 0.1), MAX_FETCH_TIMEOUT_S)
    payload = body.encode() if isinstance(body, str) else body
    request = {
        "url": url,
        "method": method,
        "headers": dict(headers or {}),
        "body": None if payload is None else base64.b64encode(payload).decode(),
        "timeout": timeout,
    }
    answer = _ask_egress(request, timeout)
    return Response(
        status=int(answer["status"]),
        headers={str(k): str(v) for k, v in answer["headers"].items()},
        body=base64.b64decode(answer["body"]),
    )


def send_datagrams(target: str, datagrams: list[bytes]) -> int:
    """Send UDP datagrams to ``target`` (``host:port``) through Forecourt's egress proxy.

    ``target`` must be declared with its port; its addresses pass the SSRF guard as for
    :func:`fetch`. At most 1,000 datagrams of at most 8,192 bytes each per call; a call that
    breaks a bound sends nothing. Returns how many were sent. Raises :class:`EgressRefused`
    when the proxy refuses, :class:`FetchError` when sending fails, :class:`NotAvailable`
    when the plugin declared no hosts.
    """
    if _egress_socket is None:
        raise NotAvailable("this plugin declared no network hosts, so it has no network")
    if len(datagrams) > MAX_DATAGRAMS_PER_CALL:
        raise ValueError(f"at most {MAX_DATAGRAMS_PER_CALL} datagrams may be sent per call")
    for datagram in datagrams:
        if not isinstance(datagram, bytes):
            raise TypeError("a datagram is bytes")
        if len(datagram) > MAX_DATAGRAM_BYTES:
            raise ValueError(f"a datagram is over {MAX_DATAGRAM_BYTES} bytes")
    request = {
        "op": "datagrams",
        "target": target,
        "datagrams": [base64.b64encode(datagram).decode() for datagram in datagrams],
    }
    answer = _ask_egress(request, DATAGRAM_TIMEOUT_S)
    return int(answer["sent"])


def _ask_egress(request: dict[str, Any], timeout: float) -> dict[str, Any]:
    """One request to the egress proxy; its answer when ``ok``, else the error it names."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout + EGRESS_GRACE_S)
            sock.connect(str(_egress_socket))
            _wire.send_frame(sock, request)
            answer = _wire.recv_frame(sock)
    except (OSError, _wire.FrameError) as exc:
        raise FetchError(f"the egress proxy could not be reached: {exc}") from None
    if not isinstance(answer, dict):
        raise FetchError("the egress proxy closed the connection without an answer")
    if not answer.get("ok"):
        error = EgressRefused if answer.get("refused") else FetchError
        raise error(str(answer.get("message", "the request failed")))
    return answer


def connection_token(name: str) -> str:
    """An access token of the OAuth connection ``name``.

    Not available yet: it arrives with OAuth connections. Always raises :class:`NotAvailable`.
    """
    raise NotAvailable(f"connection {name!r}: OAuth connections are not available to plugins yet")


def _start(egress_socket: str | None) -> None:
    """Called once by the worker, before plugin code is imported."""
    global _egress_socket
    _egress_socket = egress_socket


def _begin_call(configuration: dict[str, Any]) -> None:
    """Called by the worker before each call."""
    global _current
    _current = _Call(config=configuration)


def _end_call() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Called by the worker after each call: the metrics and events it recorded."""
    global _current
    finished, _current = _current, _Call()
    return finished.metrics, finished.events
