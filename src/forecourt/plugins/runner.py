"""Running plugin instances: the sandbox pool, the files each version needs, and the record.

One :class:`PluginRunner` belongs to the Forecourt object. Every run, whatever started it (the
API, an event, the schedule), goes through :meth:`PluginRunner.run`: the instance's
configuration is unsealed, the version's files are unpacked on this node if needed, the call
runs in the :class:`~forecourt.plugins.sandbox.WorkerPool` (started on first use), the answer
is read and its output checked against the type's contract (a large answer in the
:class:`~forecourt.plugins.answers.AnswerPool`'s processes, so the server never holds its
objects: see :mod:`forecourt.plugins.answers`), and then, in one transaction, the execution is
recorded and its events are published (``plugin.execution_completed`` / ``plugin.failed``,
and the follow-up events the plugin emitted or, for a hook, returned).

After the commit, :attr:`PluginRunner.on_run` hears of the record of every scheduled run and
of every collector run started through the API: one path for both, which stores a collector's
metrics as series of its instance and publishes ``execution_complete`` / ``metrics_update`` to
the live streams. A collector run on demand is thereby measured exactly as a scheduled one.

Workers are keyed by plugin version *and tenant*: a worker serves one tenant's instances only,
so what one tenant's configuration holds can never be seen by another tenant's calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from forecourt import codec
from forecourt.crypto import DecryptionFailed, SecretBox
from forecourt.db.base import utcnow
from forecourt.errors import ForecourtError, SandboxUnavailable
from forecourt.events.outbox import OnPublished
from forecourt.ids import new_id
from forecourt.observability.instruments import plugin_ran
from forecourt.plugins import publishing
from forecourt.plugins.answers import AnswerPool, Checked, Reader, check_output, internal_error
from forecourt.plugins.configuration import unseal
from forecourt.plugins.exports import target_hosts
from forecourt.plugins.models import Plugin, PluginArchive, PluginExecution, PluginInstance
from forecourt.plugins.package import read_package
from forecourt.plugins.routing import DEPTH_KEY
from forecourt.plugins.sandbox import CallResult, Limits, SandboxConfig, WorkerPool, WorkerSpec
from forecourt.plugins.sandbox.capabilities import SandboxReport, detect
from forecourt.plugins.store import PackageStore, host_modules
from forecourt.settings import Settings

log = logging.getLogger("forecourt.plugins")

CONFIG_PURPOSE = "plugin-config"
MAX_LOG_CHARS = 20_000
MAX_MESSAGE_CHARS = 4096
CLOSE_DEADLINE_S = 10.0
COLLECTOR = "collector"

RunHook = Callable[[PluginExecution], None]
"""Told of a run's record once it is committed (see :attr:`PluginRunner.on_run`)."""


@dataclass(frozen=True)
class Run:
    """A finished run: its record, and its output, encoded by the codec, when it succeeded."""

    execution: PluginExecution
    output_json: bytes | None

    @property
    def output(self) -> Any:
        """The output as Python values (parsed on each use: for callers that are not the
        server, such as the CLI)."""
        return None if self.output_json is None else codec.loads(self.output_json)


def sandbox_config(settings: Settings) -> SandboxConfig:
    """The sandbox this installation runs plugins in, from the settings."""
    return SandboxConfig(
        uid=settings.plugin_sandbox_uid,
        gid=settings.plugin_sandbox_gid,
        work_root=settings.sandbox_dir.resolve(),
        warm_workers=min(settings.plugin_warm_workers, settings.plugin_max_workers),
        max_workers_per_key=settings.plugin_max_workers,
        require=settings.plugin_sandbox_require,
        allow_private=settings.webhook_allow_private,
        max_threads=settings.plugin_max_threads,
        idle_timeout_s=settings.plugin_idle_timeout_s,
    )


def limits(manifest: dict[str, Any], settings: Settings) -> Limits:
    """What one run may use: the manifest's ``resources`` or the defaults, within the caps."""
    asked = manifest.get("resources") or {}
    default = Limits()

    def pick(name: str, cap: float, minimum: float) -> float:
        value = asked.get(name, getattr(default, name))
        return float(max(min(value, cap), minimum))

    return Limits(
        timeout_s=pick("timeout_s", settings.plugin_max_timeout_s, 0.1),
        cpu_s=math.ceil(pick("cpu_s", settings.plugin_max_cpu_s, 1)),
        memory_mib=int(pick("memory_mib", settings.plugin_max_memory_mib, 64)),
        file_mib=int(pick("file_mib", settings.plugin_max_file_mib, 1)),
        open_files=int(pick("open_files", settings.plugin_max_open_files, 16)),
    )


class PluginRunner:
    """Runs instances in the sandbox and records each run (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        on_published: OnPublished | None = None,
    ) -> None:
        self.settings = settings
        self.sessionmaker = sessionmaker
        self.on_published = on_published
        self.on_recorded: Callable[[str], None] = lambda tenant_id: None  # after a run's commit
        # Told of each run that ``reported`` selects, after its commit: the metrics store and
        # the live streams (set by the Forecourt that owns the runner, on every node).
        self.on_run: RunHook | None = None
        self.config = sandbox_config(settings)
        self.box = SecretBox(settings.resolved_secret_key, CONFIG_PURPOSE)
        self.store = PackageStore(settings.plugins_dir.resolve())
        self.answers = AnswerPool()
        self._pool: WorkerPool | None = None
        self._pool_lock = asyncio.Lock()
        self._keys: dict[tuple[str, str], set[str]] = {}

    def report(self) -> SandboxReport:
        """The protections plugin workers get on this host (probed once; blocking)."""
        return detect(self.config)

    async def pool(self) -> WorkerPool:
        """The worker pool, started on first use; SandboxUnavailable if protections the
        admin requires are missing."""
        async with self._pool_lock:
            if self._pool is None:
                pool = WorkerPool(self.config)
                await pool.start()
                self._pool = pool
            return self._pool

    async def close(self, deadline_s: float = CLOSE_DEADLINE_S) -> None:
        """Let calls in flight finish (until the deadline), then stop every worker and the
        processes that read large answers."""
        async with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close(deadline_s)
        await self.answers.close()

    async def reload(self, plugin_id: str, version: str) -> None:
        """Restart a version's workers gracefully: calls in flight finish on the old code."""
        if self._pool is None:
            return
        for key in sorted(self._keys.get((plugin_id, version), ())):
            await self._pool.reload(key)

    async def forget(self, plugin_id: str, version: str) -> None:
        """Stop a removed version's workers for good: calls in flight finish, none restarts."""
        keys = self._keys.pop((plugin_id, version), set())
        if self._pool is None:
            return
        for key in sorted(keys):
            await self._pool.retire(key)

    async def ensure_files(self, plugin: Plugin) -> None:
        """Unpack the version on this node from its stored package, unless already there."""
        if self.store.current(plugin.plugin_id, plugin.version, plugin.sha256):
            return
        async with self.sessionmaker() as session:
            archive = await session.scalar(
                select(PluginArchive.data).where(PluginArchive.plugin_version_id == plugin.id)
            )
        if archive is None:
            raise SandboxUnavailable(f"The package of {plugin.plugin_id} {plugin.version} is gone.")
        package = await asyncio.to_thread(read_package, archive, max_bytes=len(archive))
        host = host_modules(package.files) if plugin.builtin else ()
        await self.store.unpack(package, plugin.sha256, host=host)
        await self.reload(plugin.plugin_id, plugin.version)  # workers on the files replaced

    def spec(self, plugin: Plugin, tenant_id: str, hosts: tuple[str, ...] = ()) -> WorkerSpec:
        # ``hosts``: an exporter instance's target (exports.target_hosts), on workers of its own.
        key = f"{plugin.plugin_id}@{plugin.version}/{tenant_id}" + "".join(f" {h}" for h in hosts)
        self._keys.setdefault((plugin.plugin_id, plugin.version), set()).add(key)
        permissions = plugin.manifest.get("permissions") or {}
        return WorkerSpec(
            key=key,
            package_dir=self.store.package_dir(plugin.plugin_id, plugin.version),
            entry_point=plugin.manifest["entry_point"],
            runtime="wasm" if plugin.runtime == "wasm" else "python",
            site_dirs=(self.store.site_dir(plugin.plugin_id, plugin.version),),
            network_hosts=tuple(permissions.get("network") or ()) + hosts,
            limits=limits(plugin.manifest, self.settings),
            host_metrics=bool(permissions.get("host_metrics", False)),
            unix_sockets=tuple(permissions.get("unix_sockets") or ()),
        )

    async def run(
        self,
        instance: PluginInstance,
        plugin: Plugin,
        input: Any,
        *,
        trigger: str,
        event_id: str | None = None,
        attempt: int = 1,
        depth: int = 0,
    ) -> Run:
        """Run ``instance`` (pinned to ``plugin``) on ``input``; record and publish the run.

        Whatever the plugin returns or raises, and whatever fails in Forecourt on the way,
        the run ends with an execution record (a failure of Forecourt's own is status
        ``error``). Only a database that cannot take the record makes this raise.
        """
        started_at = utcnow()
        started = time.perf_counter()
        declared = list((plugin.manifest.get("permissions") or {}).get("metrics") or [])
        reader = Reader(self.answers, plugin.type, declared)

        def record(result: CallResult, metrics: list[dict[str, Any]]) -> PluginExecution:
            return self._execution(
                instance, plugin, trigger, event_id, attempt, started_at, result, metrics
            )

        try:
            result = await self._call(instance, plugin, input, reader)
            if result.duration_ms == 0:
                result.duration_ms = (time.perf_counter() - started) * 1000
            checked = reader.checked_for(result, check_output)
        except asyncio.CancelledError:
            result = CallResult("error", error_class="Cancelled")
            result.error_message = "the run was cancelled before it ended (Forecourt stopping)"
            result.duration_ms = (time.perf_counter() - started) * 1000
            execution = record(result, [])
            # Recorded in a task of its own, which the cancellation does not reach.
            await _shielded(self._record_alone(instance, execution, result.logs))
            raise
        except Exception as exc:
            log.exception("running plugin %s failed inside Forecourt", plugin.plugin_id)
            result = internal_error(exc)
            result.duration_ms = (time.perf_counter() - started) * 1000
            checked = Checked(result, None, [])
        execution = record(checked.result, checked.metrics)
        plugin_ran(checked.result.status, checked.result.duration_ms)
        try:
            await self._record(instance, execution, checked, depth)
        except Exception as exc:
            log.exception("recording a run of plugin %s failed", plugin.plugin_id)
            # The record alone, without its events: the run is known to have happened.
            message = (
                f"the run's outcome could not be recorded ({type(exc).__name__}); "
                "the server's log has the details"
            )
            unrecorded = replace(
                checked.result, status="error", error_class="RecordFailed", error_message=message
            )
            failed = record(unrecorded, checked.metrics)
            await self._record_alone(instance, failed, unrecorded.logs)
            self._report(plugin, failed)
            return Run(failed, None)
        self._report(plugin, execution)
        return Run(execution, checked.output_json)

    def _report(self, plugin: Plugin, execution: PluginExecution) -> None:
        """Tell ``on_run`` of a recorded run it hears of; its failure is logged, never the
        run's."""
        if self.on_run is None or not reported(plugin, execution.trigger):
            return
        try:
            self.on_run(execution)
        except Exception:
            log.exception("what follows a run of plugin %s failed", plugin.plugin_id)

    async def record_unrun(
        self,
        instance: PluginInstance,
        plugin: Plugin,
        *,
        trigger: str,
        error_class: str,
        message: str,
        event_id: str | None = None,
        attempt: int = 1,
    ) -> PluginExecution:
        """Record a run that was not started (status ``error``), with ``plugin.failed``."""
        result = CallResult("error", error_class=error_class, error_message=message)
        execution = self._execution(
            instance, plugin, trigger, event_id, attempt, utcnow(), result, []
        )
        await self._record(instance, execution, Checked(result, None, []), 0)
        return execution

    def _execution(
        self,
        instance: PluginInstance,
        plugin: Plugin,
        trigger: str,
        event_id: str | None,
        attempt: int,
        started_at: datetime,
        result: CallResult,
        metrics: list[dict[str, Any]],
    ) -> PluginExecution:
        """The record of a run that ended with ``result`` (not yet stored; no logs yet)."""
        return PluginExecution(
            id=new_id("pex"),
            tenant_id=instance.tenant_id,
            instance_id=instance.id,
            plugin_id=plugin.plugin_id,
            version=plugin.version,
            trigger=trigger,
            attempt=attempt,
            event_id=event_id,
            started_at=started_at,
            duration_ms=round(result.duration_ms, 3),
            status=result.status,
            error_class=result.error_class,
            error_message=_cut(result.error_message, MAX_MESSAGE_CHARS),
            logs="",
            cpu_ms=result.cpu_ms,
            max_rss_kib=result.max_rss_kib,
            metrics=metrics,
        )

    async def _call(
        self, instance: PluginInstance, plugin: Plugin, input: Any, reader: Reader
    ) -> CallResult:
        try:
            await self.ensure_files(plugin)
            config = unseal(instance.config, plugin.manifest.get("config_schema") or {}, self.box)
            spec = self.spec(plugin, instance.tenant_id, target_hosts(plugin.manifest, config))
            pool = await self.pool()
            return await pool.call(spec, input=input, config=config, read=reader)
        except ForecourtError as exc:  # a required protection is missing; pip failed here
            return CallResult("refused", error_class=type(exc).__name__, error_message=exc.detail)
        except DecryptionFailed:
            message = "the configuration's secrets do not decrypt with this server's secret key"
            return CallResult("refused", error_class="DecryptionFailed", error_message=message)
        except (OSError, ValueError) as exc:
            log.exception("plugin %s could not be started", plugin.plugin_id)
            return CallResult("refused", error_class=type(exc).__name__, error_message=str(exc))
        except Exception as exc:  # the pool or a worker failed in a way of its own
            log.exception("calling plugin %s failed", plugin.plugin_id)
            return internal_error(exc)

    async def _record(
        self, instance: PluginInstance, execution: PluginExecution, checked: Checked, depth: int
    ) -> None:
        result, notes = checked.result, list(checked.notes)
        async with self.sessionmaker() as session:
            row = (
                await session.execute(
                    select(PluginInstance.id, PluginInstance.last_status).where(
                        PluginInstance.id == instance.id
                    )
                )
            ).first()
            if row is None:  # deleted during the run: the record stays, without it
                execution.instance_id = None
            previous = None if row is None else row.last_status
            # Events published here count one more plugin run in their chain.
            session.info[DEPTH_KEY] = depth + 1
            if result.ok:
                notes += await publishing.follow_ups(
                    session, instance, checked.follow_ups, self.on_published
                )
            await publishing.outcome(
                session, instance, execution, previous, self.settings, self.on_published
            )
            trailer = "".join(f"[forecourt] {note}\n" for note in notes)
            execution.logs = _cut(result.logs + trailer, MAX_LOG_CHARS) or ""
            session.add(execution)
            if row is not None:
                await session.execute(
                    update(PluginInstance)
                    .where(PluginInstance.id == instance.id)
                    .values(last_status=execution.status)
                )
            await session.commit()
        self.on_recorded(instance.tenant_id)

    async def _record_alone(
        self, instance: PluginInstance, execution: PluginExecution, logs: str
    ) -> None:
        """Store ``execution`` by itself: no event, no instance status (a fallback)."""
        execution.logs = _cut(logs, MAX_LOG_CHARS) or ""
        async with self.sessionmaker() as session:
            exists = await session.scalar(
                select(PluginInstance.id).where(PluginInstance.id == instance.id)
            )
            if exists is None:
                execution.instance_id = None
            session.add(execution)
            await session.commit()
        self.on_recorded(instance.tenant_id)


def reported(plugin: Plugin, trigger: str) -> bool:
    """Whether ``on_run`` hears of a run: every scheduled one (collectors and metrics
    exporters), and a collector's run started through the API, whose metrics count as much
    as a scheduled run's."""
    return trigger == "schedule" or (trigger == "api" and plugin.type == COLLECTOR)


async def _shielded(work: Coroutine[Any, Any, None]) -> None:
    """Run ``work`` to its end even if the caller is cancelled meanwhile (errors logged)."""
    task = asyncio.ensure_future(work)
    _pending.add(task)
    task.add_done_callback(_settled)
    with contextlib.suppress(Exception, asyncio.CancelledError):
        await asyncio.shield(task)


_pending: set[asyncio.Future[None]] = set()


def _settled(task: asyncio.Future[None]) -> None:
    _pending.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.error("recording a cancelled plugin run failed", exc_info=task.exception())


def _cut(text: str | None, limit: int) -> str | None:
    if text is None:
        return None
    return text if len(text) <= limit else text[: limit - 1] + "…"
