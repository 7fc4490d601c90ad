"""Running Forecourt the way an operator does, for the end-to-end tests.

``Node`` is one long-running ``forecourt serve`` or ``forecourt worker`` process, its output
in a file so it can never block on a pipe (short commands: ``commands.run``).
``ThreadedReceiver`` is the loopback receiver of ``receivers.py`` on an event loop of its own
thread, so a test can drive the synchronous SDK while webhooks arrive. ``wait_until`` is the
one way to wait: poll with a deadline.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

import httpx
import pytest

from commands import FORECOURT
from conftest import free_port
from receivers import Received, Receiver, ReplyFor

START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 15.0
POLL_INTERVAL_S = 0.05
WORKER_BANNER = "forecourt worker"  # "forecourt worker <id> started" on stderr when ready

T = TypeVar("T")


def wait_until(
    condition: Callable[[], T | Literal[False] | None], timeout_s: float, what: str
) -> T:
    """Poll ``condition`` until it returns something truthy, and return that; fail the test
    after ``timeout_s``. (``lambda: ready and value`` waits for ``ready``, returns ``value``.)"""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(POLL_INTERVAL_S)


@dataclass
class Node:
    """One ``forecourt`` process that runs until stopped: ``serve`` (ready when /healthz
    answers) or ``worker`` (ready when it says so on stderr)."""

    args: Sequence[str]
    env: dict[str, str]
    cwd: Path
    name: str = "node"
    port: int | None = None
    process: subprocess.Popen[bytes] | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.cwd / f"{self.name}.log"

    @classmethod
    def serve(cls, env: dict[str, str], cwd: Path, *flags: str, name: str = "serve") -> Node:
        port = free_port()
        return cls(["serve", "--port", str(port), *flags], env, cwd, name=name, port=port)

    @classmethod
    def worker(cls, env: dict[str, str], cwd: Path, name: str = "worker") -> Node:
        return cls(["worker"], env, cwd, name=name)

    @property
    def base_url(self) -> str:
        assert self.port is not None, "only `serve` listens"
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def start(self) -> Node:
        assert self.process is None
        with self.log.open("wb") as sink:
            self.process = subprocess.Popen(
                [str(FORECOURT), *self.args],
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=sink,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(
                    f"forecourt {self.args[0]} exited with {self.process.returncode}:\n"
                    f"{self.output()}"
                )
            if self._ready():
                return self
            time.sleep(POLL_INTERVAL_S)
        self.kill()
        pytest.fail(f"forecourt {self.args[0]} not ready in {START_TIMEOUT_S} s:\n{self.output()}")

    def _ready(self) -> bool:
        if self.port is None:
            return any(
                line.startswith(WORKER_BANNER) and line.endswith("started")
                for line in self.output().splitlines()
            )
        try:
            return httpx.get(self.base_url + "/healthz", timeout=1.0).status_code == 200
        except httpx.TransportError:
            return False

    def terminate(self) -> int:
        """SIGTERM, and the exit code, which must come within STOP_TIMEOUT_S."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(
                f"forecourt {self.args[0]} ignored SIGTERM for {STOP_TIMEOUT_S} s:\n{self.output()}"
            )
        self.process = None
        return code

    def kill(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait()
            self.process = None


def terminate_all(nodes: Sequence[Node]) -> list[int]:
    """SIGTERM every running node at once; their exit codes, which must all come within
    STOP_TIMEOUT_S of the signal."""
    running = [n for n in nodes if n.process is not None]
    for node in running:
        assert node.process is not None
        node.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    codes: list[int] = []
    for node in running:
        assert node.process is not None
        try:
            codes.append(node.process.wait(timeout=max(0.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            for other in running:
                other.kill()
            pytest.fail(
                f"forecourt {node.args[0]} ignored SIGTERM for {STOP_TIMEOUT_S} s:\n{node.output()}"
            )
        node.process = None
    return codes


class ThreadedReceiver:
    """``receivers.Receiver`` served from a thread of its own: start, reply, read what it
    received, stop — all from synchronous test code."""

    def __init__(self, default: ReplyFor | None = None) -> None:
        self._receiver = Receiver(default)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="webhook-receiver", daemon=True
        )

    def url(self, path: str = "/hook") -> str:
        return self._receiver.url(path)

    def reply(self, path: str, how: ReplyFor) -> None:
        """Answer requests to ``path`` with ``how`` from the moment this returns."""

        async def switch() -> None:
            self._receiver.reply(path, how)

        asyncio.run_coroutine_threadsafe(switch(), self._loop).result(timeout=10)

    def received(self, path: str | None = None) -> list[Received]:
        """Every request so far (to ``path``), in order of arrival."""
        snapshot = list(self._receiver.received)
        return [r for r in snapshot if path is None or r.path == path]

    def start(self) -> ThreadedReceiver:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._receiver.start(), self._loop).result(timeout=10)
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        try:
            asyncio.run_coroutine_threadsafe(self._receiver.stop(), self._loop).result(timeout=10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()

    def __enter__(self) -> ThreadedReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
