"""Background plugin work on nodes that run workers: scheduled collectors, development folders,
and pruning old execution records.

**Collectors** run every ``permissions.schedule_interval_s``, while their plugin is usable for
their tenant (available to it and enabled by it; a due run waits until it is again). Each
instance keeps its ``next_run_at`` in the database; a node claims a due run by moving
``next_run_at`` past the run's deadline in one conditional UPDATE, so with several worker
nodes each run happens once, and a node that dies mid-run only delays the next one. When the
run ends, ``next_run_at`` becomes one interval after its start, or now if the run took
longer: runs never overlap, missed ones are skipped, not caught up.

**Development folders** (``forecourt plugins install DIR``) are watched cheaply: a walk of
file sizes and modification times each tick. When the folder changes it is read and checked
again like a new package (manifest, caps, signature); if it still holds the same id and
version, its files are unpacked again and the version's workers restart gracefully. If not,
the version is marked ``invalid`` (with why) and keeps running its last good files.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import and_, delete, or_, select, update

from forecourt.db.base import utcnow
from forecourt.errors import ForecourtError
from forecourt.metrics.service import Metrics
from forecourt.plugins import exports, policy, publishers
from forecourt.plugins.instances import interval_s
from forecourt.plugins.models import (
    INVALID,
    READY,
    Plugin,
    PluginArchive,
    PluginExecution,
    PluginInstance,
)
from forecourt.plugins.package import IGNORED_DIRS, read_package
from forecourt.plugins.policy import check_package
from forecourt.plugins.routing import LEASE_MARGIN_S
from forecourt.plugins.runner import PluginRunner, limits
from forecourt.plugins.service import package_columns
from forecourt.plugins.store import zip_files

log = logging.getLogger("forecourt.plugins")

TICK_S = 1.0
PRUNE_EVERY_S = 3600.0

Signature = tuple[int, int, int]  # files, total bytes, newest modification (ns)


class Scheduler:
    """Runs due collectors, follows development folders, prunes old executions."""

    def __init__(self, runner: PluginRunner, tick_s: float = TICK_S) -> None:
        self.runner = runner
        self.sessionmaker = runner.sessionmaker
        self.settings = runner.settings
        self.tick_s = tick_s
        self._running: dict[str, asyncio.Task[None]] = {}
        self._seen: dict[str, Signature] = {}
        self._task: asyncio.Task[None] | None = None
        self._pruned_at = 0.0
        # What metrics exporters read (plugins/exports.py); without it they get no batch.
        self.metrics: Metrics | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="forecourt-plugin-scheduler")

    async def stop(self, grace_s: float) -> None:
        """Stop scheduling; runs in flight get ``grace_s`` to finish."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        tasks = list(self._running.values())
        if tasks:
            await asyncio.wait(tasks, timeout=grace_s)
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            for step in (self.run_due, self.watch_folders):
                try:
                    await step()
                except Exception:
                    log.exception("plugin scheduler step %s failed", step.__name__)
            if loop.time() - self._pruned_at > PRUNE_EVERY_S:
                self._pruned_at = loop.time()
                with contextlib.suppress(Exception):
                    await self.prune()
            await asyncio.sleep(self.tick_s)

    # -- collectors ------------------------------------------------------------------------

    async def run_due(self) -> None:
        """Start every due collector run this node can claim."""
        now = utcnow()
        async with self.sessionmaker() as session:
            due = (
                await session.execute(
                    select(PluginInstance, Plugin)
                    .join(Plugin, Plugin.id == PluginInstance.plugin_version_id)
                    .where(
                        # Due: collectors and metrics exporters (the exports with a next
                        # run); a collector without a next run yet is due at once.
                        or_(
                            PluginInstance.next_run_at <= now,
                            and_(
                                PluginInstance.plugin_type == "collector",
                                PluginInstance.next_run_at.is_(None),
                            ),
                        ),
                        PluginInstance.enabled.is_(True),
                        # Available to the instance's tenant and enabled for it.
                        policy.usable_clause(PluginInstance.tenant_id),
                    )
                )
            ).all()
            claimed = []
            for instance, plugin in due:
                if instance.id in self._running:
                    continue  # still running here: this run is skipped
                hold = limits(plugin.manifest, self.settings).timeout_s + LEASE_MARGIN_S
                result = await session.execute(
                    update(PluginInstance)
                    .where(
                        PluginInstance.id == instance.id,
                        or_(
                            PluginInstance.next_run_at.is_(None), PluginInstance.next_run_at <= now
                        ),
                    )
                    .values(next_run_at=now + timedelta(seconds=hold))
                    .execution_options(synchronize_session=False)
                )
                if result.rowcount:  # type: ignore[attr-defined]
                    claimed.append((instance, plugin))
            await session.commit()
        for instance, plugin in claimed:
            task = asyncio.create_task(self._run(instance, plugin, now))
            self._running[instance.id] = task
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        for key, running in list(self._running.items()):
            if running is task:
                del self._running[key]
        if not task.cancelled() and task.exception() is not None:
            log.error("a scheduled plugin run failed", exc_info=task.exception())

    async def _run(self, instance: PluginInstance, plugin: Plugin, started: datetime) -> None:
        every = interval_s(plugin) or 60
        try:
            batch = None
            if exports.is_exporter(plugin) and self.metrics is not None:
                batch = await exports.batch(self.metrics, self.sessionmaker, instance, every)
            payload = {"interval_s": every} if batch is None else batch.input
            run = await self.runner.run(instance, plugin, payload, trigger="schedule")
            if batch is not None and run.execution.status == "ok":
                await batch.commit(self.sessionmaker)
        finally:
            following = max(started + timedelta(seconds=every), utcnow())
            async with self.sessionmaker() as session, session.begin():
                await session.execute(
                    update(PluginInstance)
                    .where(PluginInstance.id == instance.id)
                    .values(next_run_at=following)
                )

    # -- development folders ---------------------------------------------------------------

    async def watch_folders(self) -> None:
        """Reinstall each watched development folder that changed since the last look."""
        async with self.sessionmaker() as session:
            rows = list(
                (await session.scalars(select(Plugin).where(Plugin.source_dir.is_not(None)))).all()
            )
        for row in rows:
            folder = Path(row.source_dir or "")
            signature = await asyncio.to_thread(folder_signature, folder)
            if signature is None:
                continue  # not on this node
            if self._seen.get(row.id) == signature:
                continue
            await self.refresh(row, folder)
            self._seen[row.id] = signature  # after: a refresh that raised is tried again

    async def refresh(self, row: Plugin, folder: Path) -> None:
        """Read ``folder`` again; reinstall the version from it if it changed and is valid."""
        try:
            package = await asyncio.to_thread(
                read_package, folder, max_bytes=self.settings.plugin_max_package_bytes
            )
            async with self.sessionmaker() as session:
                trusted = await publishers.trusted_keys(session, self.settings)
            check_package(package, self.settings, trusted)
            manifest = package.manifest
            if (manifest.id, manifest.version) != (row.plugin_id, row.version):
                raise ValueError(
                    f"the folder now holds {manifest.id} {manifest.version}; "
                    "install it as a new version"
                )
            if manifest.type != row.type:
                raise ValueError(f"the folder's plugin is now a {manifest.type}, not a {row.type}")
            if package.sha256 == row.sha256 and row.status == READY:
                return
        except (ForecourtError, ValueError, OSError) as exc:
            detail = getattr(exc, "detail", None) or str(exc)
            errors = getattr(exc, "extra", {}).get("errors")
            if errors:
                detail += ": " + "; ".join(f"{e['field']}: {e['message']}" for e in errors)
            await self._mark(row.id, INVALID, detail)
            log.warning(
                "development plugin %s %s is invalid: %s", row.plugin_id, row.version, detail
            )
            return
        async with self.sessionmaker() as session, session.begin():
            await session.execute(
                update(Plugin)
                .where(Plugin.id == row.id)
                .values(
                    **package_columns(package),
                    status=READY,
                    status_detail=None,
                    updated_at=utcnow(),
                )
            )
            await session.execute(
                update(PluginArchive)
                .where(PluginArchive.plugin_version_id == row.id)
                .values(data=zip_files(package.files))
            )
        # The database first: a run starting meanwhile unpacks the new package, not the old.
        await self.runner.store.unpack(package, package.sha256, replace=True)
        await self.runner.reload(row.plugin_id, row.version)
        log.info("reloaded development plugin %s %s", row.plugin_id, row.version)

    async def _mark(self, row_id: str, status: str, detail: str | None) -> None:
        async with self.sessionmaker() as session, session.begin():
            await session.execute(
                update(Plugin)
                .where(Plugin.id == row_id)
                .values(status=status, status_detail=detail)
            )

    # -- pruning ---------------------------------------------------------------------------

    async def prune(self) -> int:
        """Delete execution records past ``plugin_execution_retention_days``."""
        cutoff = utcnow() - timedelta(days=self.settings.plugin_execution_retention_days)
        async with self.sessionmaker() as session, session.begin():
            result = await session.execute(
                delete(PluginExecution).where(PluginExecution.started_at < cutoff)
            )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]


def folder_signature(folder: Path) -> Signature | None:
    """Files, total size and newest modification time under ``folder`` (stat only); None
    if there is no such folder."""
    if not folder.is_dir():
        return None
    count = size = newest = 0
    pending = [folder]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    if entry.name not in IGNORED_DIRS:
                        pending.append(Path(entry.path))
                    continue
                info = entry.stat(follow_symlinks=False)
                count, size, newest = count + 1, size + info.st_size, max(newest, info.st_mtime_ns)
    return count, size, newest
