"""The events a plugin run publishes, added to the transaction that records the run.

- **Follow-up events**, when the run succeeded: those the plugin emitted with
  ``forecourt_plugin.emit`` and, for a hook, the ``events`` of its output. Each is published
  as an event of the instance's tenant, with the instance as its ``source``, after the same
  checks as ``POST /api/v1/events`` (a type the tenant's catalog knows, its schema, the size
  cap). One that fails them is left out and noted in the run's logs; so is one of Forecourt's
  own types (``key.revoked``, ``plugin.failed``...), which plugins may not forge.
- **The outcome**: ``plugin.execution_completed`` or ``plugin.failed``. Runs started by the
  schedule publish ``plugin.failed`` when a run fails after one that did not (a collector
  failing every 30 s would otherwise send an event every 30 s), and their successes only with
  ``FORECOURT_PLUGIN_SCHEDULE_EVENTS=all``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from forecourt.errors import InvalidInput, PayloadTooLarge
from forecourt.events import catalog
from forecourt.events.outbox import OnPublished, publish_in
from forecourt.plugins.models import PluginExecution, PluginInstance
from forecourt.plugins.routing import source
from forecourt.settings import Settings

MAX_ERROR_CHARS = 500  # of the error message carried in plugin.failed


async def follow_ups(
    session: AsyncSession,
    instance: PluginInstance,
    items: list[dict[str, Any]],
    on_published: OnPublished | None,
) -> list[str]:
    """Publish the run's follow-up events (gathered and capped with its output's check,
    :func:`forecourt.plugins.answers.check_output`); notes on those left out, for the run's
    logs."""
    notes: list[str] = []
    for item in items:
        kind = str(item.get("type"))
        builtin = catalog.BUILTINS.get(kind)
        if builtin is not None and builtin.category == catalog.SYSTEM_CATEGORY:
            notes.append(f"follow-up event {kind!r} dropped: Forecourt's own types are reserved")
            continue
        try:
            await publish_in(
                session,
                tenant_id=instance.tenant_id,
                type=kind,
                data=item.get("data"),
                subject=item.get("subject"),
                source=source(instance.tenant_id, instance.id),
                on_committed=on_published,
            )
        except (InvalidInput, PayloadTooLarge) as exc:
            notes.append(f"follow-up event {kind!r} dropped: {exc.detail}")
    return notes


async def outcome(
    session: AsyncSession,
    instance: PluginInstance,
    execution: PluginExecution,
    previous_status: str | None,
    settings: Settings,
    on_published: OnPublished | None,
) -> None:
    """Publish ``plugin.execution_completed`` or ``plugin.failed`` for the run, if due."""
    failed = execution.status != "ok"
    quiet = execution.trigger == "schedule" and settings.plugin_schedule_events == "failures"
    if quiet and (not failed or previous_status not in (None, "ok")):
        return
    message = execution.error_message
    await publish_in(
        session,
        tenant_id=instance.tenant_id,
        type="plugin.failed" if failed else "plugin.execution_completed",
        data={
            "plugin_id": execution.plugin_id,
            "version": execution.version,
            "instance_id": instance.id,
            "instance_name": instance.name,
            "execution_id": execution.id,
            "trigger": execution.trigger,
            "attempt": execution.attempt,
            "event_id": execution.event_id,
            "status": execution.status,
            "duration_ms": execution.duration_ms,
            "error_class": execution.error_class,
            "error_message": message[:MAX_ERROR_CHARS] if message else None,
        },
        subject=instance.id,
        severity="error" if failed else "info",
        source=source(instance.tenant_id, instance.id),
        on_committed=on_published,
    )
