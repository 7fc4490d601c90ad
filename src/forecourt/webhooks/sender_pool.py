"""The delivery worker's HTTP exchanges, made in sender processes on the other cores.

Python runs one thread of Python at a time, and an aiohttp POST costs the worker about as much
as everything else it does for a delivery (claim, sign, record) put together. A ``SenderPool``
moves the exchanges to ``FORECOURT_DELIVERY_SENDER_PROCESSES`` child processes
(``sender_process``), so a worker uses two cores or more while its queue, signing and
recording stay in one place. Each request goes to the child with the fewest in flight.

A child starts on the first delivery and is replaced when it exits. An exchange under way in a
child that exits ends as an ``internal`` error, so the delivery is retried on its schedule
(the receiver may have had it: at-least-once). A child that cannot start, or that exits
``MAX_CRASHES`` times within ``CRASH_WINDOW_S``, makes the pool send from the worker's own
process from then on, with a logged error: deliveries never stop for want of a process.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import sys
import time
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING

import orjson

from forecourt.webhooks import ssrf
from forecourt.webhooks.schedule import ERROR_INTERNAL
from forecourt.webhooks.sender import (
    LIMIT_PER_HOST,
    Sender,
    SendResult,
    WebhookSender,
    host_limit,
    timed_out,
)
from forecourt.webhooks.sender_process import (
    READ_CHUNK_BYTES,
    READY,
    FrameParser,
    FrameWriter,
    decode_result,
    encode_request,
)

if TYPE_CHECKING:
    from forecourt.settings import Settings

LOG = logging.getLogger("forecourt.webhooks")

MAX_AUTO_PROCESSES = 4
SPAWN_TIMEOUT_S = 15.0
REPLY_MARGIN_S = 5.0  # past a request's own timeout, how long its result may take to come back
SWEEP_S = 1.0  # how often requests past that deadline are ended (one timer for all of them)
STOP_GRACE_S = 5.0
CRASH_WINDOW_S = 60.0
MAX_CRASHES = 3
RESULT_LINE_LIMIT_BYTES = 1 << 20


def auto_processes() -> int:
    """One sender process per core beyond the first, at most ``MAX_AUTO_PROCESSES``."""
    return max(0, min(MAX_AUTO_PROCESSES, (os.cpu_count() or 1) - 1))


def from_settings(settings: Settings) -> WebhookSender:
    """The sender ``settings`` ask for: a pool of sender processes, or (0 processes) a
    ``Sender`` in this process."""
    processes = settings.delivery_sender_processes
    if processes is None:
        processes = auto_processes()
    if processes == 0:
        return Sender.from_settings(settings)
    return SenderPool(
        settings.webhook_allow_private,
        processes=processes,
        concurrency=settings.delivery_concurrency,
        limit_per_host=host_limit(settings),
    )


class _Waiting:
    """A request sent to a child and not answered yet."""

    __slots__ = ("deadline", "future", "started", "timeout_s")

    def __init__(self, future: asyncio.Future[SendResult], timeout_s: float) -> None:
        self.future = future
        self.timeout_s = timeout_s
        self.started = time.monotonic()
        self.deadline = self.started + timeout_s + REPLY_MARGIN_S


class _Child:
    """One sender process and the requests it has not answered yet."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        assert process.stdin is not None and process.stdout is not None
        self.stdin = process.stdin
        self.writer = FrameWriter(process.stdin.transport)
        self.pending: dict[int, _Waiting] = {}
        self.reader: asyncio.Task[None] | None = None

    @property
    def alive(self) -> bool:
        reading = self.reader is not None and not self.reader.done()
        return reading and self.process.returncode is None


class SenderPool:
    """Sends through ``processes`` sender processes; the same interface as ``Sender``."""

    def __init__(
        self,
        allow_private: str,
        *,
        processes: int,
        concurrency: int = 64,
        limit_per_host: int = LIMIT_PER_HOST,
    ) -> None:
        if processes < 1:
            raise ValueError("a sender pool needs one process or more")
        self._allow_private = allow_private
        self._concurrency = concurrency
        self._limit_per_host = limit_per_host
        self._children: list[_Child | None] = [None] * processes
        self._spawning: dict[int, asyncio.Task[_Child | None]] = {}
        self._crashes: deque[float] = deque()
        self._local: Sender | None = None  # after too many crashes: send from this process
        self._seq = itertools.count()
        self._sweeper: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def processes(self) -> list[int]:
        """The pids of the sender processes running now."""
        return [c.process.pid for c in self._children if c is not None and c.alive]

    @property
    def local(self) -> bool:
        """Whether the pool gave up on processes and sends from this one."""
        return self._local is not None

    async def send(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float
    ) -> SendResult:
        """POST ``body`` to ``url`` in a sender process; see ``Sender.send``."""
        if self._closed:
            raise RuntimeError("the sender pool is closed")
        child = await self._child() if self._local is None else None
        if child is None:
            return await self._fallback().send(url, body, headers, timeout_s)
        seq = next(self._seq)
        future: asyncio.Future[SendResult] = asyncio.get_running_loop().create_future()
        child.pending[seq] = _Waiting(future, timeout_s)
        child.writer.write(encode_request(seq, url, dict(headers), timeout_s, body))
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.create_task(self._sweep(), name="webhook-sender-sweep")
        try:
            return await future
        finally:
            child.pending.pop(seq, None)

    async def aclose(self) -> None:
        """Stop the sender processes (what they have in flight is dropped) and close."""
        self._closed = True
        for task in self._spawning.values():
            task.cancel()
        if self._sweeper is not None:
            self._sweeper.cancel()
        children = [c for c in self._children if c is not None]
        self._children = [None] * len(self._children)
        await asyncio.gather(*(self._stop(child) for child in children))
        if self._local is not None:
            await self._local.aclose()

    # -- the processes -----------------------------------------------------------------------

    async def _child(self) -> _Child | None:
        """The running child with the fewest requests in flight, starting one where needed;
        None once the pool sends from this process."""
        best: _Child | None = None
        for index, child in enumerate(self._children):
            if child is None or not child.alive:
                child = await self._start(index)
                if child is None:
                    return None
            if best is None or len(child.pending) < len(best.pending):
                best = child
        return best

    async def _start(self, index: int) -> _Child | None:
        task = self._spawning.get(index)
        if task is None:
            task = asyncio.create_task(self._spawn(index), name=f"webhook-sender-{index}")
            self._spawning[index] = task
            task.add_done_callback(lambda _: self._spawning.pop(index, None))
        return await asyncio.shield(task)

    async def _spawn(self, index: int) -> _Child | None:
        config = {
            "allow_private": self._allow_private,
            "concurrency": self._concurrency,
            "limit_per_host": self._limit_per_host,
            "parent": os.getpid(),
        }
        process: asyncio.subprocess.Process | None = None
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "forecourt.webhooks.sender_process",
                orjson.dumps(config).decode(),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                start_new_session=True,
                limit=RESULT_LINE_LIMIT_BYTES,
            )
            assert process.stdout is not None
            async with asyncio.timeout(SPAWN_TIMEOUT_S):
                line = await process.stdout.readline()
            if line != READY:
                raise RuntimeError(f"it answered {line[:200]!r} instead of being ready")
        except Exception as exc:
            if process is not None and process.returncode is None:
                process.kill()
                await process.wait()
            LOG.error(
                "a webhook sender process could not start (%r); webhooks are sent from the "
                "worker's own process from now on",
                exc,
            )
            self._fallback()
            return None
        child = _Child(process)
        child.reader = asyncio.create_task(self._read(child), name=f"webhook-sender-{index}-read")
        self._children[index] = child
        return child

    async def _read(self, child: _Child) -> None:
        """Hand each result to its request; when the child exits, end what it had."""
        assert child.process.stdout is not None
        stdout = child.process.stdout
        parser = FrameParser(bodies=False, max_line=RESULT_LINE_LIMIT_BYTES)
        try:
            while chunk := await stdout.read(READ_CHUNK_BYTES):
                for header, _ in parser.feed(chunk):
                    seq, result = decode_result(header)
                    waiting = child.pending.pop(seq, None)
                    if waiting is not None and not waiting.future.done():
                        waiting.future.set_result(result)
        except Exception:
            LOG.exception("reading from webhook sender process %d failed", child.process.pid)
        code = await _exit_code(child.process)
        lost = SendResult(
            status_code=None,
            duration_ms=0,
            error_class=ERROR_INTERNAL,
            error_message=(
                f"the sender process exited (code {code}) during the exchange; "
                "the receiver may have had the request"
            ),
        )
        for waiting in child.pending.values():
            if not waiting.future.done():
                waiting.future.set_result(lost)
        child.pending.clear()
        if not self._closed:
            self._crashed(f"webhook sender process {child.process.pid} exited with code {code}")

    async def _sweep(self) -> None:
        """End requests whose answer is overdue (a child that hangs without exiting) as
        timeouts; the child bounds each exchange itself, so this is the last resort."""
        while any(c is not None and c.pending for c in self._children):
            await asyncio.sleep(SWEEP_S)
            now = time.monotonic()
            for child in self._children:
                if child is None:
                    continue
                for waiting in child.pending.values():
                    if now >= waiting.deadline and not waiting.future.done():
                        duration_ms = round((now - waiting.started) * 1000)
                        waiting.future.set_result(timed_out(waiting.timeout_s, duration_ms))

    def _crashed(self, message: str) -> None:
        now = time.monotonic()
        self._crashes.append(now)
        while self._crashes and self._crashes[0] < now - CRASH_WINDOW_S:
            self._crashes.popleft()
        if len(self._crashes) >= MAX_CRASHES and self._local is None:
            LOG.error("%s; webhooks are sent from the worker's own process from now on", message)
            self._fallback()
        else:
            LOG.warning("%s; starting another", message)

    def _fallback(self) -> Sender:
        if self._local is None:
            self._local = Sender(
                ssrf.AllowPolicy.from_setting(self._allow_private),
                concurrency=self._concurrency,
                limit_per_host=self._limit_per_host,
            )
        return self._local

    async def _stop(self, child: _Child) -> None:
        with contextlib.suppress(Exception):
            child.stdin.close()
        try:
            async with asyncio.timeout(STOP_GRACE_S):
                await child.process.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                child.process.kill()
            await child.process.wait()
        if child.reader is not None:
            with contextlib.suppress(Exception):
                await child.reader


async def _exit_code(process: asyncio.subprocess.Process) -> int | None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(STOP_GRACE_S):
            return await process.wait()
    return process.returncode
