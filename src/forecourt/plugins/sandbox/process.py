"""One sandboxed worker process, seen from Forecourt: started, confined, one call at a time.

The worker's CPU time, peak memory and exit are read from the kernel (``/proc`` and a pidfd),
never from the worker, which runs plugin code. Its stdout and stderr are read continuously
into a capped buffer; each result takes what arrived since the previous one.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

from forecourt.plugins.sandbox import layout
from forecourt.plugins.sandbox.layout import WorkerDirs
from forecourt.plugins.sandbox.protocol import (
    Channel,
    FrameError,
    InvalidFrame,
    adecode,
    encode,
)
from forecourt.plugins.sandbox.result import CallResult, ProtocolViolation, from_answer, refused

LOG_LIMIT_BYTES = 16 * 1024  # of stdout and stderr kept per call
EXIT_WAIT_S = 5.0  # for a killed worker's exit to be seen
CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
_ids = itertools.count(1)
logger = logging.getLogger(__name__)

# Turns a worker's answer frame (its body, the call's id) into the call's result; raises
# InvalidFrame or ProtocolViolation when it is not an answer to that call.
AnswerReader = Callable[[bytes, int], Awaitable[CallResult]]


async def read_answer(body: bytes, call_id: int) -> CallResult:
    """The default :data:`AnswerReader`: parsed here (a large body in the codec's threads)."""
    return from_answer(await adecode(body), call_id)


class WorkerFailed(Exception):
    """The worker did not start, or refused to run plugin code; ``logs`` says what it printed."""

    def __init__(self, message: str, logs: str = "", protections: dict[str, Any] | None = None):
        super().__init__(message)
        self.logs = logs
        self.protections = protections or {}


class Worker:
    """A started worker; build with :meth:`start`."""

    def __init__(self, dirs: WorkerDirs, started: layout.Started) -> None:
        self.dirs = dirs
        self.process = started.process
        self.pid = started.process.pid
        self.protections: dict[str, Any] = {}
        self.entry_error: dict[str, str] | None = None
        self.calls = 0
        self.idle_since = time.monotonic()
        self._channel = Channel(started.calls, started.results)
        self._logs_fd = started.logs
        self._logs = bytearray()
        self._logs_dropped = 0
        self._pidfd = os.pidfd_open(self.pid)
        self._exited = asyncio.Event()
        self._final_cpu_ticks: int | None = None
        self._cpu_budget_s: int | None = None
        self._retired = False
        loop = asyncio.get_running_loop()
        os.set_blocking(self._logs_fd, False)
        loop.add_reader(self._logs_fd, self._read_logs)
        loop.add_reader(self._pidfd, self._on_exit)

    @classmethod
    async def start(cls, dirs: WorkerDirs, setup: dict[str, Any], timeout_s: float) -> Worker:
        """Start a worker with ``setup`` and wait until it is confined and ready.

        Raises :class:`WorkerFailed` (the worker is then gone).
        """
        worker = cls(dirs, layout.start(dirs))
        worker._cpu_budget_s = int(setup["plan"]["cpu_s"])
        try:
            await worker._channel.send(setup)
            ready = await asyncio.wait_for(worker._channel.receive(), timeout_s)
        except (TimeoutError, FrameError, OSError) as exc:
            await worker.stop(kill=True)
            raise WorkerFailed(f"the worker did not start: {exc!r}", worker.take_logs()) from exc
        except asyncio.CancelledError:
            worker.kill()
            raise
        if not isinstance(ready, dict) or ready.get("type") != "ready":
            await worker.stop(kill=True)
            protections = ready.get("protections") if isinstance(ready, dict) else None
            if isinstance(ready, dict) and ready.get("type") == "refused":
                message = "a required protection is missing"
            else:
                message = f"the worker did not start ({worker.exit_description()})"
            raise WorkerFailed(message, worker.take_logs(), protections)
        worker.protections = ready.get("protections") or {}
        worker.entry_error = ready.get("entry_error")
        return worker

    @property
    def alive(self) -> bool:
        """Whether the process is still running."""
        return not self._retired and not self._exited.is_set()

    async def call(
        self, message: dict[str, Any], timeout_s: float, read: AnswerReader = read_answer
    ) -> CallResult:
        """Run one call, its answer read by ``read``; the worker is killed on timeout, on a
        protocol violation and when the caller cancels (its answer would otherwise be read
        as the next call's)."""
        call_id = next(_ids)
        try:
            frame = encode({**message, "type": "call", "id": call_id})
        except (TypeError, ValueError) as exc:
            return refused(f"the input or configuration cannot be sent as JSON: {exc}")
        self.calls += 1
        cpu_before = self._cpu_ticks()
        self._reset_peak_rss()
        started = time.perf_counter()
        discard = True
        try:
            await self._channel.send_bytes(frame)
            body = await asyncio.wait_for(self._channel.receive_body(), timeout_s)
            if body is None:
                raise FrameError("the worker closed its result pipe")
            result = await read(body, call_id)
            discard = False
        except TimeoutError:
            detail = f"no answer within {timeout_s:g} s; the worker was killed"
            result = CallResult("timeout", error_class="Timeout", error_message=detail)
        except InvalidFrame as exc:  # a whole answer, but not JSON the service can take
            detail = f"the plugin's answer is not JSON that Forecourt accepts: {exc}"
            result = CallResult("error", error_class="InvalidOutput", error_message=detail)
        except (FrameError, OSError):
            result = CallResult("killed", error_class="WorkerDied")
        except ProtocolViolation as exc:
            result = CallResult("error", error_class="ProtocolViolation", error_message=str(exc))
        except asyncio.CancelledError:
            self.kill()
            raise
        except Exception as exc:  # nothing a worker sends may end the call without a result
            logger.exception("a call to worker %s failed", self.pid)
            detail = f"the answer could not be read ({type(exc).__name__}); see the server's log"
            result = CallResult("error", error_class="WorkerFailed", error_message=detail)
        result.duration_ms = (time.perf_counter() - started) * 1000
        result.max_rss_kib = self._peak_rss()
        cpu_after = self._cpu_ticks()
        if cpu_before is not None and cpu_after is not None:
            result.cpu_ms = (cpu_after - cpu_before) * 1000 / CLOCK_TICKS_PER_S
        if discard:
            await self.stop(kill=True)
            if result.status == "killed":
                result.error_message = (
                    f"the worker died during the call ({self.exit_description()})"
                )
        result.logs = self.take_logs()
        self.idle_since = time.monotonic()
        return result

    def kill(self) -> None:
        """Send SIGKILL (nothing happens if the worker has already exited)."""
        self._retired = True
        if self._pidfd < 0:  # reaped: the descriptor number may belong to something else now
            return
        with contextlib.suppress(ProcessLookupError, OSError):
            signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)

    async def stop(self, *, kill: bool = False, grace_s: float = EXIT_WAIT_S) -> None:
        """End the worker: close its call pipe (it exits when idle) or kill it; then clean up."""
        self._channel.close_writer()
        if kill:
            self.kill()
        try:
            await asyncio.wait_for(self._exited.wait(), grace_s)
        except TimeoutError:
            self.kill()
            await asyncio.wait_for(self._exited.wait(), EXIT_WAIT_S)

    def exit_description(self) -> str:
        """How the process ended, once it has."""
        code = self.process.returncode
        if code is None:
            return "still running"
        if code >= 0:
            return f"exit status {code}"
        name = signal.Signals(-code).name
        if -code == signal.SIGXCPU or (-code == signal.SIGKILL and self._over_cpu_limit()):
            return f"CPU time limit exceeded, killed by {name}"
        return f"killed by {name}"

    def take_logs(self) -> str:
        """What the worker printed since the last call, truncated to :data:`LOG_LIMIT_BYTES`."""
        self._read_logs()
        text = self._logs.decode("utf-8", "replace")
        if self._logs_dropped:
            text += f"\n[{self._logs_dropped} more bytes of output dropped]\n"
        self._logs.clear()
        self._logs_dropped = 0
        return text

    def _read_logs(self) -> None:
        while self._logs_fd >= 0:
            try:
                chunk = os.read(self._logs_fd, 65536)
            except BlockingIOError:
                return
            if not chunk:
                asyncio.get_running_loop().remove_reader(self._logs_fd)
                os.close(self._logs_fd)
                self._logs_fd = -1
                return
            room = LOG_LIMIT_BYTES - len(self._logs)
            self._logs += chunk[:room]
            self._logs_dropped += max(0, len(chunk) - room)

    def _on_exit(self) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(self._pidfd)
        self._final_cpu_ticks = self._cpu_ticks()  # a zombie still has its times
        self.process.wait()
        self._read_logs()
        self._channel.close()
        os.close(self._pidfd)
        self._pidfd = -1
        self._exited.set()

    def _cpu_ticks(self) -> int | None:
        if self._exited.is_set():
            return self._final_cpu_ticks
        try:
            with open(f"/proc/{self.pid}/stat", "rb") as file:
                fields = file.read().rsplit(b")", 1)[1].split()
        except OSError:
            return None
        return int(fields[11]) + int(fields[12])  # utime and stime, all threads

    def has_cpu_for(self, cpu_s: int) -> bool:
        """Whether the worker's CPU budget still holds ``cpu_s`` seconds for another call.

        The budget is the worker's RLIMIT_CPU, set by the worker itself when it started (the
        kernel sends SIGXCPU when it is used up and SIGKILL a second later). Nothing can raise
        it afterwards, so a worker that has used up its slack is replaced instead.
        """
        ticks = self._cpu_ticks()
        if ticks is None or self._cpu_budget_s is None:
            return False
        return self._cpu_budget_s - ticks / CLOCK_TICKS_PER_S >= cpu_s

    def _over_cpu_limit(self) -> bool:
        ticks, budget = self._final_cpu_ticks, self._cpu_budget_s
        return ticks is not None and budget is not None and ticks / CLOCK_TICKS_PER_S >= budget

    def _reset_peak_rss(self) -> None:
        with contextlib.suppress(OSError), open(f"/proc/{self.pid}/clear_refs", "w") as file:
            file.write("5")

    def _peak_rss(self) -> int | None:
        try:
            with open(f"/proc/{self.pid}/status", "rb") as file:
                for line in file:
                    if line.startswith(b"VmHWM:"):
                        return int(line.split()[1])
        except OSError:
            return None
        return None
