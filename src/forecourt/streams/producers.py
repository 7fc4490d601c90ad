"""What other services publish, as stream messages: one small function per producer.

Each takes the hub and the producer's own objects, so the producers' modules need a line
each (after their commit) and nothing of the stream's format.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from forecourt.events.envelope import StoredEvent, envelope
from forecourt.streams import channels as ch
from forecourt.streams import messages as m
from forecourt.streams.messages import StreamMessage

if TYPE_CHECKING:
    from forecourt.plugins.models import PluginExecution
    from forecourt.streams.hub import StreamHub
    from forecourt.webhooks.queue import Finished


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def event_message(event: StoredEvent) -> StreamMessage:
    """The ``event`` message of a stored event (its id is the replay log's to give)."""
    return StreamMessage(
        m.EVENT,
        event.tenant_id,
        ch.EVENTS,
        f"{ch.EVENTS}:{event.type}",
        {"event": {**envelope(event), "event_id": event.id}},
        (event.type,),
    )


def events_published(hub: StreamHub, events: Iterable[StoredEvent]) -> None:
    """``event`` per newly stored event (after its commit)."""
    for event in events:
        hub.publish_message(event_message(event))


def deliveries_recorded(hub: StreamHub, finished: Sequence[Finished]) -> None:
    """``delivery_update`` per recorded attempt: the delivery's new state."""
    for item in finished:
        attempt = item.attempt
        endpoint_id = item.claim.endpoint.id
        hub.publish(
            item.claim.tenant_id,
            m.DELIVERY_UPDATE,
            ch.DELIVERIES,
            f"{ch.DELIVERIES}:{endpoint_id}",
            {
                "delivery": {
                    "id": item.claim.id,
                    "endpoint_id": endpoint_id,
                    "status": item.status,
                    "attempt": attempt["attempt_no"],
                    "response_status": attempt["status_code"],
                    "duration_ms": attempt["duration_ms"],
                    "error": item.last_error,
                    "next_attempt_at": _iso(item.next_attempt_at),
                }
            },
            (endpoint_id,),
        )


def execution_finished(hub: StreamHub, execution: PluginExecution) -> None:
    """``execution_complete`` after a run; ``metrics_update`` too when it succeeded with
    metrics."""
    metrics: list[dict[str, Any]] = list(execution.metrics or [])
    success = execution.status == "ok"
    plugin_id = execution.plugin_id
    hub.publish(
        execution.tenant_id,
        m.EXECUTION_COMPLETE,
        ch.EXECUTIONS,
        f"{ch.EXECUTIONS}:{plugin_id}",
        {
            "plugin_id": plugin_id,
            "instance_id": execution.instance_id,
            "execution": {
                "id": execution.id,
                "success": success,
                "status": execution.status,
                "trigger": execution.trigger,
                "started_at": _iso(execution.started_at),
                "duration_ms": execution.duration_ms,
                "metrics_count": len(metrics),
                "error": execution.error_message,
            },
        },
        (plugin_id,),
    )
    if success and metrics:
        names = sorted({str(point.get("name")) for point in metrics})
        hub.publish(
            execution.tenant_id,
            m.METRICS_UPDATE,
            ch.METRICS,
            f"{ch.METRICS}:{plugin_id}",
            {
                "plugin_id": plugin_id,
                "instance_id": execution.instance_id,
                "metrics": metrics,
            },
            (plugin_id, *names),
        )


def alert_changed(hub: StreamHub, tenant_id: str, alert: dict[str, Any]) -> None:
    """``alert`` when an alert opens, repeats, is acknowledged or resolves (``alert`` as
    the alerts API shows it)."""
    hub.publish(tenant_id, m.ALERT, ch.ALERTS, ch.ALERTS, {"alert": alert})
