"""The pool of sandboxed workers: one set per plugin version (a spec's ``key``), reused warm.

A call takes an idle worker of its key (or starts one, up to ``max_workers_per_key`` at a
time; further calls wait), runs, and gives the worker back. A worker that timed out, died or
broke the protocol is discarded, and a replacement is started in the background so that
``warm_workers`` stay ready. :meth:`WorkerPool.reload` retires a key's workers gracefully
(calls in flight finish on the old code, new calls get fresh workers); a spec that changes
under the same key does the same. A key unused for ``idle_timeout_s`` has its idle workers
stopped and is forgotten (:meth:`WorkerPool.sweep`, run in the background), so warm workers do
not pile up per plugin version and tenant. :meth:`WorkerPool.close` lets calls in flight
finish until a deadline, then kills what is left.

Plugin misbehaviour never raises: it is a status in the :class:`~.result.CallResult`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forecourt.errors import SandboxUnavailable
from forecourt.plugins.sandbox import capabilities, layout
from forecourt.plugins.sandbox.capabilities import SandboxReport
from forecourt.plugins.sandbox.egress import Egress, parse_hosts
from forecourt.plugins.sandbox.limits import SandboxConfig, WorkerSpec
from forecourt.plugins.sandbox.process import AnswerReader, Worker, WorkerFailed, read_answer
from forecourt.plugins.sandbox.result import CallResult, refused
from forecourt.webhooks.ssrf import AllowPolicy, Resolver

START_TIMEOUT_S = 15.0  # for a new worker to be confined and ready
EXTRA_IDLE_S = 30.0  # idle workers beyond warm_workers are stopped after this long
MAX_SWEEP_INTERVAL_S = 30.0  # how often, at most, unused keys are looked for

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class _Member:
    worker: Worker
    generation: int
    egress: asyncio.Server | None


@dataclass(eq=False)
class _Key:
    spec: WorkerSpec
    slots: asyncio.Semaphore
    generation: int = 0
    idle: list[_Member] = field(default_factory=list)
    busy: set[_Member] = field(default_factory=set)
    starting: int = 0
    used_at: float = 0.0  # the pool's clock when a call of this key last began or ended


class WorkerPool:
    """Sandboxed workers for every plugin version in use; see the module docstring."""

    def __init__(
        self,
        config: SandboxConfig,
        *,
        resolver: Resolver | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``resolver`` answers the egress proxy's DNS lookups (the system's by default);
        ``clock`` (seconds) tells when a key has been unused for ``idle_timeout_s``."""
        AllowPolicy.from_setting(config.allow_private)  # a bad policy fails here, not later
        self.config = config
        self.clock = clock
        self._sweeper: asyncio.Task[None] | None = None
        self._report: SandboxReport | None = None
        self._keys: dict[str, _Key] = {}
        self._egress = Egress(config.allow_private, resolver)
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_flight = 0
        self._drained = asyncio.Event()
        self._drained.set()
        self._closing = False

    @property
    def report(self) -> SandboxReport:
        """The protections workers get here (probed once, on first use)."""
        if self._report is None:
            self._report = capabilities.detect(self.config)
        return self._report

    async def start(self) -> None:
        """Probe the protections; raise :class:`SandboxUnavailable` if required ones are missing."""
        if self._report is None:
            self._report = await asyncio.to_thread(capabilities.detect, self.config)
        if self.config.require == "all" and not self._report.complete:
            missing = ", ".join(self._report.missing)
            raise SandboxUnavailable(f"the sandbox is missing required protections: {missing}")
        if self._sweeper is None and not self._closing:
            self._sweeper = asyncio.create_task(self._sweep_loop(), name="forecourt-sandbox-sweep")

    async def call(
        self,
        spec: WorkerSpec,
        *,
        input: Any,
        config: dict[str, Any],
        timeout_s: float | None = None,
        read: AnswerReader = read_answer,
    ) -> CallResult:
        """Run ``spec``'s entry point on ``input`` with the instance ``config``; the worker's
        answer is read by ``read`` (by default, parsed in this process)."""
        if self._closing:
            return refused("the plugin pool is shutting down")
        await self.start()
        problem = self._unrunnable(spec)
        if problem:
            return refused(problem)
        keyed = self._key(spec)
        keyed.used_at = self.clock()
        self._in_flight += 1
        self._drained.clear()
        try:
            async with keyed.slots:
                if self._closing:  # closed while this call waited for a worker
                    return refused("the plugin pool is shutting down")
                member = await self._acquire(keyed)
                if isinstance(member, CallResult):
                    return member
                keyed.busy.add(member)
                try:
                    message = {"input": input, "config": config}
                    timeout = spec.limits.timeout_s if timeout_s is None else timeout_s
                    return await member.worker.call(message, timeout, read)
                finally:
                    keyed.busy.discard(member)
                    keyed.used_at = self.clock()
                    await self._release(keyed, member)
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._drained.set()

    async def reload(self, key: str) -> None:
        """Retire ``key``'s workers: calls in flight finish, new calls get fresh workers."""
        keyed = self._keys.get(key)
        if keyed is None:
            return
        keyed.generation += 1
        idle, keyed.idle = keyed.idle, []
        await asyncio.gather(*(self._discard(member) for member in idle))
        self._keep_warm(keyed)

    async def retire(self, key: str) -> None:
        """Stop ``key``'s workers for good (its version is gone): idle ones now, busy ones
        when their call ends; none is started or kept warm for it any more."""
        keyed = self._keys.pop(key, None)
        if keyed is None:
            return
        keyed.generation += 1
        idle, keyed.idle = keyed.idle, []
        await asyncio.gather(*(self._discard(member) for member in idle))

    async def sweep(self) -> int:
        """Stop the workers of every key unused for ``idle_timeout_s`` (none busy, none
        starting) and forget the key; how many workers were stopped. A later call of such
        a key starts a fresh worker, so idle workers never pile up per plugin and tenant."""
        now = self.clock()
        stale = [
            keyed
            for keyed in self._keys.values()
            if not keyed.busy
            and not keyed.starting
            and now - keyed.used_at >= self.config.idle_timeout_s
        ]
        members: list[_Member] = []
        for keyed in stale:
            del self._keys[keyed.spec.key]
            keyed.generation += 1  # a warm start still under way is discarded when it ends
            members += keyed.idle
            keyed.idle = []
        if members:
            # A task of the pool's own: close() waits for it, even if this sweep is cancelled.
            task = asyncio.create_task(self._discard_all(members))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            await asyncio.shield(task)
        return len(members)

    async def _discard_all(self, members: list[_Member]) -> None:
        await asyncio.gather(*(self._discard(member) for member in members))

    async def _sweep_loop(self) -> None:
        interval = min(self.config.idle_timeout_s / 2, MAX_SWEEP_INTERVAL_S)
        while not self._closing:
            await asyncio.sleep(interval)
            try:
                await self.sweep()
            except Exception:
                logger.exception("stopping idle sandbox workers failed")

    def workers(self, key: str) -> int:
        """Workers running or starting for ``key``: idle, busy and starting."""
        keyed = self._keys.get(key)
        return 0 if keyed is None else len(keyed.idle) + len(keyed.busy) + keyed.starting

    async def close(self, deadline_s: float = 10.0) -> None:
        """Stop taking calls, let those in flight finish until ``deadline_s``, kill the rest."""
        self._closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drained.wait(), deadline_s)
        for keyed in self._keys.values():
            for member in keyed.busy:
                member.worker.kill()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drained.wait(), deadline_s)
        await asyncio.gather(*self._tasks, return_exceptions=True)  # warm starts end quickly
        members = [m for keyed in self._keys.values() for m in keyed.idle]
        await asyncio.gather(*(self._discard(member) for member in members))
        self._keys.clear()
        await self._egress.close()

    def _unrunnable(self, spec: WorkerSpec) -> str | None:
        if not spec.package_dir.is_dir():
            return f"the package directory {spec.package_dir} does not exist"
        work_root = self.config.work_root.resolve()
        for exposed in (spec.package_dir, *spec.site_dirs):
            if work_root.is_relative_to(exposed.resolve()):
                return f"{exposed} contains the sandbox's work_root, which workers must not see"
        if spec.runtime == "wasm" and not self.report[capabilities.WASM_RUNTIME].available:
            return "this installation cannot run wasm plugins: the wasmtime package is missing"
        try:
            parse_hosts(spec.network_hosts)
        except ValueError as exc:
            return str(exc)
        for path in spec.unix_sockets:
            if Path(os.path.realpath(path)).is_relative_to(
                work_root
            ):  # other workers' egress sockets
                return f"the unix socket {path} is inside the sandbox's work_root"
        return None

    def _key(self, spec: WorkerSpec) -> _Key:
        keyed = self._keys.get(spec.key)
        if keyed is None:
            keyed = _Key(spec, asyncio.Semaphore(self.config.max_workers_per_key))
            self._keys[spec.key] = keyed
        elif keyed.spec != spec:  # a new version under the same key: as a reload
            keyed.spec = spec
            keyed.generation += 1
        return keyed

    async def _acquire(self, keyed: _Key) -> _Member | CallResult:
        cpu_s = keyed.spec.limits.cpu_s
        while keyed.idle:
            member = keyed.idle.pop()
            fresh = member.worker.alive and member.generation == keyed.generation
            if fresh and member.worker.has_cpu_for(cpu_s):
                return member
            await self._discard(member)
        return await self._start(keyed)

    async def _start(self, keyed: _Key) -> _Member | CallResult:
        spec, generation = keyed.spec, keyed.generation
        dirs = layout.WorkerDirs.create(self.config)
        server = None
        keyed.starting += 1
        try:
            if spec.network_hosts:
                owner = None if layout.use_user_namespace() else (self.config.uid, self.config.gid)
                server = await self._egress.serve(dirs.egress_socket, spec.network_hosts, owner)
            setup = layout.setup_message(spec, self.config, dirs, egress=server is not None)
            worker = await Worker.start(dirs, setup, START_TIMEOUT_S)
        except (WorkerFailed, OSError) as exc:
            await _close_server(server)
            dirs.remove()
            logs = exc.logs if isinstance(exc, WorkerFailed) else ""
            if isinstance(exc, WorkerFailed) and exc.protections:
                return CallResult("refused", error_class="SandboxUnavailable",
                                  error_message=str(exc), logs=logs)  # fmt: skip
            return CallResult(
                "error", error_class="WorkerFailed", error_message=str(exc), logs=logs
            )
        except asyncio.CancelledError:
            await _close_server(server)
            dirs.remove()
            raise
        finally:
            keyed.starting -= 1
        return _Member(worker, generation, server)

    async def _release(self, keyed: _Key, member: _Member) -> None:
        current = member.generation == keyed.generation and self._keys.get(keyed.spec.key) is keyed
        if member.worker.alive and current and not self._closing:
            keyed.idle.append(member)
        else:
            await self._discard(member)
        await self._trim(keyed)
        self._keep_warm(keyed)

    async def _trim(self, keyed: _Key) -> None:
        """Stop idle workers beyond ``warm_workers`` that have waited longer than EXTRA_IDLE_S."""
        now = time.monotonic()
        extra = len(keyed.idle) - self.config.warm_workers
        stale = [m for m in keyed.idle[: max(extra, 0)] if now - m.worker.idle_since > EXTRA_IDLE_S]
        for member in stale:
            keyed.idle.remove(member)
        await asyncio.gather(*(self._discard(member) for member in stale))

    def _keep_warm(self, keyed: _Key) -> None:
        """Start workers in the background until ``warm_workers`` are up for ``keyed``."""
        if self._closing or self._keys.get(keyed.spec.key) is not keyed:  # closing, retired
            return
        missing = self.config.warm_workers - len(keyed.idle) - len(keyed.busy) - keyed.starting
        for _ in range(max(missing, 0)):
            task = asyncio.create_task(self._warm(keyed))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _warm(self, keyed: _Key) -> None:
        member = await self._start(keyed)
        if not isinstance(member, _Member):
            logger.warning(
                "a warm worker for %s did not start: %s", keyed.spec.key, member.error_message
            )
            return
        await self._release(keyed, member)

    async def _discard(self, member: _Member) -> None:
        await member.worker.stop(kill=not member.worker.alive)
        await _close_server(member.egress)
        member.worker.dirs.remove()


async def _close_server(server: asyncio.Server | None) -> None:
    if server is not None:
        server.close()
        await server.wait_closed()
