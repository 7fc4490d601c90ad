"""The Forecourt object: one place where settings become engines, clients and services.

Transports (REST, CLI) and host apps reach every capability through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from forecourt import codec
from forecourt.alerts.evaluator import RuleEvaluator
from forecourt.alerts.rules import RuleService
from forecourt.alerts.service import AlertHooks, AlertService
from forecourt.broadcast import Broadcast, MemoryBroadcast, RedisBroadcast
from forecourt.crypto import SecretBox
from forecourt.db import migrate
from forecourt.db.engine import create_engine, create_sessionmaker
from forecourt.db.gate import WriteGate
from forecourt.events.ingest import EventWriter
from forecourt.events.outbox import EMITTED_HOOK, STREAMED_HOOK
from forecourt.keys.auth import KeyAuthenticator
from forecourt.keys.cache import INVALIDATE_CHANNEL, KeyCache
from forecourt.keys.service import KeyConfig, KeyService
from forecourt.keys.usage import UsageRecorder
from forecourt.metrics.service import Metrics
from forecourt.observability import logring
from forecourt.observability.backlog import Backlog
from forecourt.overview.cache import INVALIDATE_CHANNEL as OVERVIEW_CHANNEL
from forecourt.overview.cache import OverviewCache
from forecourt.plugins.routing import WAKE_KEY as PLUGINS_WAKE_KEY
from forecourt.plugins.routing import EventRouter
from forecourt.plugins.runner import PluginRunner
from forecourt.plugins.scheduler import Scheduler
from forecourt.principal import Principal
from forecourt.ratelimit.failover import FailoverLimiter
from forecourt.ratelimit.memory import MemoryLimiter
from forecourt.ratelimit.policy import Policy
from forecourt.ratelimit.redis import RedisLimiter
from forecourt.ratelimit.windows import Limiter
from forecourt.scopes import SYSTEM_ADMIN
from forecourt.settings import Settings
from forecourt.streams import producers as stream_producers
from forecourt.streams.hub import StreamHub
from forecourt.tenants.service import SUSPENSION_CHANNEL, Suspensions, TenantService
from forecourt.users.models import User
from forecourt.users.service import UserService, key_session_principal, user_principal
from forecourt.users.throttle import SignInThrottle
from forecourt.webhooks import ssrf
from forecourt.webhooks.delivery import DeliveryWorker, default_worker_id
from forecourt.webhooks.service import SECRET_PURPOSE, EndpointService, WebhookConfig

if TYPE_CHECKING:
    from collections.abc import Sequence

    from fastapi import FastAPI

    from forecourt.events.envelope import StoredEvent
    from forecourt.events.service import EventService
    from forecourt.plugins.instances import InstanceService
    from forecourt.plugins.models import PluginExecution
    from forecourt.plugins.service import PluginService
    from forecourt.webhooks.models import Endpoint
    from forecourt.webhooks.queue import Finished

log = logging.getLogger("forecourt")

# A dead Redis refuses or times out a connect quickly; a busy one may answer a command late,
# and a late answer is better than failing over (which gives up exact admission).
REDIS_CONNECT_TIMEOUT_S = 0.5
REDIS_SOCKET_TIMEOUT_S = 2.0
REDIS_MAX_CONNECTIONS = 128
WAKE_CHANNEL = "deliveries.wake"
RETENTION_INTERVAL_S = 3600.0


class Forecourt:
    """Forecourt, wired from ``settings``. ``start()`` before use, ``stop()`` after."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        s = self.settings
        # Before anything else creates it: the data folder is the owner's alone (0700).
        s.ensure_data_dir()
        self.engine: AsyncEngine = create_engine(s.resolved_database_url)
        self.sessionmaker: async_sessionmaker[AsyncSession] = create_sessionmaker(self.engine)
        # Events any service emits in a session wake the delivery workers once committed.
        self.sessionmaker.configure(
            info={
                EMITTED_HOOK: self.on_published,
                PLUGINS_WAKE_KEY: self._wake_plugins,
                STREAMED_HOOK: self._events_stored,
            }
        )
        self.write_gate = WriteGate(serialize=s.is_sqlite)
        # Recent log records for /api/v1/system/logs; the queue's figures for /metrics.
        logring.install()
        self.backlog = Backlog(self.sessionmaker)
        codec.configure(max_depth=s.json_max_depth)
        self.event_writer = EventWriter(
            self.sessionmaker,
            self.write_gate,
            idempotency_window_s=s.idempotency_window_s,
            on_published=self.on_published,
        )
        self.redis: aioredis.Redis | None = None
        self.broadcast: Broadcast
        memory = MemoryLimiter()
        self.limiter: Limiter
        if s.redis_url:
            # A blocking pool waits for a free connection under bursts instead of raising.
            pool = aioredis.BlockingConnectionPool.from_url(
                s.redis_url,
                max_connections=REDIS_MAX_CONNECTIONS,
                timeout=REDIS_SOCKET_TIMEOUT_S,
                socket_timeout=REDIS_SOCKET_TIMEOUT_S,
                socket_connect_timeout=REDIS_CONNECT_TIMEOUT_S,
            )
            self.redis = aioredis.Redis.from_pool(pool)
            self.limiter = FailoverLimiter(
                RedisLimiter(self.redis, prefix=s.redis_prefix + "rl:"),
                memory,
                fail_open=s.rate_limit_fail_open,
            )
            # Pub/sub blocks on reads, so it gets a client without a socket timeout.
            self._pubsub_redis = aioredis.Redis.from_url(
                s.redis_url, socket_connect_timeout=REDIS_CONNECT_TIMEOUT_S
            )
            self.broadcast = RedisBroadcast(self._pubsub_redis, s.redis_prefix)
        else:
            self.limiter = memory
            self.broadcast = MemoryBroadcast()
        self.policy = Policy(s.rate_limit_tiers, s.default_tier, s.ip_rate_limit)
        self.key_config = KeyConfig(
            secret=s.resolved_secret_key,
            policy=self.policy,
            environment=s.key_environment,
            rotation_grace_s=s.key_rotation_grace_s,
        )
        self.key_cache = KeyCache(s.key_cache_ttl_s)
        self.authenticator = KeyAuthenticator(
            self.sessionmaker, self.key_config.secret, self.key_cache
        )
        self.usage = UsageRecorder(self.sessionmaker, s.usage_flush_interval_s)
        self.signin_throttle = SignInThrottle.from_settings(s, self.redis)
        self.broadcast.subscribe(INVALIDATE_CHANNEL, self.key_cache.invalidate)
        # Suspended tenants: checked wherever a caller is resolved, kept current by broadcast.
        self.suspensions = Suspensions()
        self.broadcast.subscribe(SUSPENSION_CHANNEL, self.suspensions.on_message)
        # Tenant summaries and plugin health, dropped on every node by the writes that change them.
        self.overview_cache = OverviewCache(s.overview_cache_ttl_s)
        self.broadcast.subscribe(OVERVIEW_CHANNEL, self.overview_cache.invalidate)
        self._overview_changes: set[str] = set()
        self._overview_task: asyncio.Task[None] | None = None
        # Live streams: the hub producers publish to and /ws and /api/v1/stream read from.
        self.streams = StreamHub(
            self.broadcast,
            window_s=s.stream_replay_window_s,
            max_messages=s.stream_replay_max_messages,
            heartbeat_s=s.stream_heartbeat_s,
            max_connections_per_actor=s.stream_max_connections_per_key,
            queue_size=s.stream_send_queue,
            max_subscriptions=s.stream_max_subscriptions,
            redis=self.redis,
            reader=self._pubsub_redis if self.redis is not None else None,
            prefix=s.redis_prefix,
        )
        self.event_writer.on_stored = self._events_stored
        self.operator_tenant_id: str | None = None
        self.webhook_config = WebhookConfig(
            box=SecretBox(self.key_config.secret, SECRET_PURPOSE),
            policy=ssrf.AllowPolicy.from_setting(s.webhook_allow_private),
            resolver=ssrf.SystemResolver(),
            overlap_s=s.secret_rotation_overlap_s,
        )
        self.worker_id = default_worker_id()
        # Metrics: the write buffer flushes on every node; rollups and retention run on
        # nodes that run workers.
        self.metrics = Metrics(s, self.engine, self.sessionmaker, self.write_gate, self.worker_id)
        self.worker: DeliveryWorker | None = None
        # Plugins: the sandbox pool starts on first use; the router and the scheduler run on
        # nodes that run workers.
        self.plugin_runner = PluginRunner(s, self.sessionmaker, on_published=self.on_published)
        self.plugin_runner.on_recorded = self.overview_changed
        # Every node: a collector run started through the API stores its metrics and reaches
        # the streams like a scheduled one, on API-only nodes too.
        self.plugin_runner.on_run = self._execution_finished
        self.plugin_router: EventRouter | None = None
        self.plugin_scheduler: Scheduler | None = None
        # Alerts: rules are evaluated on nodes that run workers.
        self.alert_hooks = AlertHooks(on_change=self._alert_changed)
        self.alert_evaluator = RuleEvaluator(
            self.sessionmaker, self.write_gate, self.alert_hooks, s.alert_evaluation_interval_s
        )
        self.broadcast.subscribe(WAKE_CHANNEL, self._wake_local)
        self._wake_pending = False
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self, *, run_workers: bool = True) -> None:
        """Migrate (SQLite), bootstrap the first tenant, and start background work."""
        from forecourt.bootstrap import bootstrap

        if self._started:
            return
        if self.settings.is_sqlite:
            await migrate.upgrade(self.engine)
        else:
            await migrate.require_current(self.engine)
        await bootstrap(self)
        await self._load_tenants()
        from forecourt.plugins.bundled import install_bundled

        await install_bundled(self)
        await self.broadcast.start()
        await self.streams.start()
        self.metrics.default_tenant_id = self.operator_tenant_id
        self.metrics.start()
        self._tasks.append(asyncio.create_task(self.usage.run(), name="forecourt-usage"))
        self._tasks.append(
            asyncio.create_task(
                self.suspensions.run(self.sessionmaker), name="forecourt-suspensions"
            )
        )
        from forecourt.events.service import run_retention

        # Built on every node (the test-endpoint API sends through it); started only on
        # nodes that run workers.
        self.worker = DeliveryWorker(
            self, worker_id=self.worker_id, on_endpoint_disabled=self._endpoint_disabled
        )
        if run_workers:
            await self.worker.start()
            self.event_writer.handoff = self.worker
            self.plugin_router = EventRouter(self.plugin_runner, self.worker_id)
            await self.plugin_router.start()
            self.plugin_scheduler = Scheduler(self.plugin_runner)
            self.plugin_scheduler.metrics = self.metrics
            await self.plugin_scheduler.start()
            self._tasks.append(
                asyncio.create_task(
                    run_retention(self, interval_s=RETENTION_INTERVAL_S),
                    name="forecourt-retention",
                )
            )
            if self.settings.alert_evaluation_interval_s > 0:
                self._tasks.append(
                    asyncio.create_task(self.alert_evaluator.run(), name="forecourt-alert-rules")
                )
            self._tasks.append(
                asyncio.create_task(self.metrics.run_jobs(), name="forecourt-metrics-jobs")
            )
        self._started = True

    async def stop(self) -> None:
        """Stop background work, flush what is buffered, close connections."""
        grace = self.settings.delivery_shutdown_grace_s
        if self.plugin_scheduler is not None:
            await self.plugin_scheduler.stop(grace)
            self.plugin_scheduler = None
        if self.plugin_router is not None:
            await self.plugin_router.stop(grace)
            self.plugin_router = None
        await self.plugin_runner.close(grace)
        self.event_writer.handoff = None
        if self.worker is not None:
            await self.worker.stop(self.settings.delivery_shutdown_grace_s)
            self.worker = None
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await self.metrics.aclose()
        await self.usage.aclose()
        await self.streams.aclose()
        await self.broadcast.aclose()
        await self.limiter.aclose()
        if self.redis is not None:
            await self.redis.aclose()
            await self._pubsub_redis.aclose()
        await self.engine.dispose()
        self._started = False

    # -- services ----------------------------------------------------------------------

    def keys(self, session: AsyncSession) -> KeyService:
        return KeyService(session, self.key_config, self.broadcast)

    def tenants(self, session: AsyncSession) -> TenantService:
        return TenantService(session, self.keys(session), self.broadcast)

    async def _load_tenants(self) -> None:
        """The default tenant (the operator's) and the suspended ones."""
        from sqlalchemy import select

        from forecourt.tenants.models import DEFAULT_TENANT_SLUG, Tenant

        async with self.sessionmaker() as session:
            self.operator_tenant_id = await session.scalar(
                select(Tenant.id).where(Tenant.slug == DEFAULT_TENANT_SLUG)
            )
        await self.suspensions.reload(self.sessionmaker)

    def webhooks(self, session: AsyncSession) -> EndpointService:
        return EndpointService(session, self.webhook_config)

    def plugins(self, session: AsyncSession) -> PluginService:
        from forecourt.plugins.service import PluginService

        return PluginService(session, self.plugin_runner, self.on_published)

    def plugin_instances(self, session: AsyncSession) -> InstanceService:
        from forecourt.plugins.instances import InstanceService

        return InstanceService(session, self.plugin_runner)

    def alerts(self, session: AsyncSession) -> AlertService:
        """Alerts in ``session``: ``await fc.alerts(session).trigger(actor, NewAlert(...))``."""
        return AlertService(session, self.alert_hooks)

    def alert_rules(self, session: AsyncSession) -> RuleService:
        return RuleService(session, self.alert_hooks)

    def events(self, session: AsyncSession) -> EventService:
        from forecourt.events.service import EventConfig, EventService

        config = EventConfig.from_settings(self.settings, self.on_published, self.event_writer)
        return EventService(session, config)

    def on_published(self, deliveries: int) -> None:
        """Events were committed with ``deliveries`` deliveries: wake the workers."""
        if deliveries:
            self.wake_workers()

    def _events_stored(self, events: list[StoredEvent]) -> None:
        stream_producers.events_published(self.streams, events)
        for tenant_id in {event.tenant_id for event in events}:
            self.overview_changed(tenant_id)

    def deliveries_recorded(self, finished: Sequence[Finished]) -> None:
        """Attempts were recorded: their deliveries' new states go to the live streams."""
        stream_producers.deliveries_recorded(self.streams, finished)
        for tenant_id in {done.claim.tenant_id for done in finished}:
            self.overview_changed(tenant_id)

    def _alert_changed(self, tenant_id: str, alert: dict[str, Any]) -> None:
        """An alert opened, repeated, was acknowledged or resolved: to the live streams."""
        stream_producers.alert_changed(self.streams, tenant_id, alert)
        self.overview_changed(tenant_id)

    def _execution_finished(self, execution: PluginExecution) -> None:
        stream_producers.execution_finished(self.streams, execution)
        self.overview_changed(execution.tenant_id)
        # A collector's metrics become series of its instance; the record keeps its summary.
        self.metrics.take_run(
            execution.tenant_id, execution.instance_id, execution.started_at, execution.metrics
        )

    def overview_changed(self, tenant_id: str) -> None:
        """A commit changed the tenant's summary or plugin health: drop this node's copy now,
        and other nodes' through the broadcast (tenants gathered while one message is out)."""
        self.overview_cache.invalidate(tenant_id)
        if self.redis is None:
            return
        self._overview_changes.add(tenant_id)
        if self._overview_task is None:
            self._overview_task = asyncio.get_running_loop().create_task(self._send_overview())

    async def _send_overview(self) -> None:
        try:
            while self._overview_changes:
                tenant_id = self._overview_changes.pop()
                await self.broadcast.publish(OVERVIEW_CHANNEL, tenant_id)
        finally:
            self._overview_task = None

    async def _endpoint_disabled(self, session: AsyncSession, endpoint: Endpoint) -> None:
        """Publish ``endpoint.disabled`` in the transaction that disables the endpoint."""
        from forecourt.events.service import emit
        from forecourt.webhooks.service import mask_url

        await emit(
            session,
            endpoint.tenant_id,
            "endpoint.disabled",
            # Events are read without webhooks:secrets: no URL credentials or query here.
            {
                "endpoint_id": endpoint.id,
                "url": mask_url(endpoint.url),
                "reason": endpoint.disabled_reason,
            },
            subject=endpoint.id,
            severity="warning",
            hook=self.on_published,
        )
        # An automatic action: the audit entry names Forecourt itself (the system) as actor.
        from forecourt import principal as principals
        from forecourt.audit import service as audit

        audit.record(
            session,
            principals.system(endpoint.tenant_id),
            "endpoint.disabled",
            "endpoint",
            endpoint.id,
            after={
                "enabled": False,
                "disabled_reason": endpoint.disabled_reason,
                "automatic": True,
            },
        )

    def wake_workers(self) -> None:
        """New deliveries are due: wake this node's worker now, and other nodes' through the
        broadcast (coalesced: one message in flight at a time)."""
        self._wake_local()
        if self.redis is not None and not self._wake_pending:
            self._wake_pending = True
            asyncio.get_running_loop().create_task(self._broadcast_wake())

    async def _broadcast_wake(self) -> None:
        try:
            await self.broadcast.publish(WAKE_CHANNEL, self.worker_id)
        finally:
            self._wake_pending = False

    def _wake_plugins(self, _queued: int = 0) -> None:
        """Events were queued for plugins: this node's router looks now (others poll)."""
        if self.plugin_router is not None:
            self.plugin_router.wake()

    def _wake_local(self, _message: str | None = None) -> None:
        if self.worker is not None:
            self.worker.wake()

    async def resolve_session(
        self, token: str, ip: str | None, request_id: str | None
    ) -> tuple[Principal, str] | None:
        """The caller behind a session cookie, and the session's CSRF token.

        A key's session is the key: it is read again on each request, so a revoked or expired
        key (or a suspended tenant, refused later like the key's own requests) ends it at once
        on every node; its scopes and limits are the key's, never more."""
        async with self.sessionmaker() as session:
            resolved = await UserService(session).resolve_session(token)
        if resolved is None:
            return None
        holder, record = resolved
        if not isinstance(holder, User):
            return key_session_principal(holder, ip, request_id), record.csrf_token
        user = holder
        principal = user_principal(user, record, ip, request_id)
        if user.role == "owner" and user.tenant_id == self.operator_tenant_id:
            # The default tenant's owners are the installation's operators.
            principal = replace(principal, scopes=principal.scopes | {SYSTEM_ADMIN})
        return principal, record.csrf_token

    async def ready(self) -> dict[str, str]:
        """Reachability of the database and (when configured) Redis."""
        from sqlalchemy import text

        checks: dict[str, str] = {}
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = f"unreachable: {type(exc).__name__}"
        if self.redis is not None:
            try:
                await self.redis.ping()
                checks["redis"] = "ok"
            except Exception as exc:
                checks["redis"] = f"unreachable: {type(exc).__name__}"
        return checks

    @property
    def asgi(self) -> FastAPI:
        """An ASGI app over this instance, to mount in a host application."""
        from forecourt.app import create_app

        return create_app(self.settings, forecourt=self)
