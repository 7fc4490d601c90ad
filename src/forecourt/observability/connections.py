"""Live connections (WebSocket and SSE), counted for Prometheus.

The streams call ``opened(kind)`` when a client is accepted and ``closed(kind)`` when it
goes, or hold ``connected(kind)`` for the connection's life. In multiprocess mode the gauge
is the sum over live processes (``livesum``): a process that dies takes its count with it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

from prometheus_client import Gauge

from forecourt.observability.registry import registered

Kind = Literal["websocket", "sse"]
KINDS: tuple[Kind, ...] = ("websocket", "sse")

CONNECTIONS = registered(
    lambda: Gauge(
        "forecourt_stream_connections",
        "Open live-stream connections, by kind (websocket, sse).",
        ["kind"],
        multiprocess_mode="livesum",
    ),
    "forecourt_stream_connections",
)
_BY_KIND = {kind: CONNECTIONS.labels(kind=kind) for kind in KINDS}


def opened(kind: Kind) -> None:
    """A ``kind`` connection was accepted."""
    _BY_KIND[kind].inc()


def closed(kind: Kind) -> None:
    """A ``kind`` connection ended (once per ``opened``)."""
    _BY_KIND[kind].dec()


@contextmanager
def connected(kind: Kind) -> Iterator[None]:
    """Count a ``kind`` connection while the block runs."""
    opened(kind)
    try:
        yield
    finally:
        closed(kind)
