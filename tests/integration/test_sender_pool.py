"""Sender processes: the delivery worker's HTTP exchanges made in child processes.

Real child processes and a real receiver on the loopback; nothing is mocked.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from typing import Any

import psutil
import pytest

from forecourt.settings import Settings
from forecourt.webhooks import sender_pool
from forecourt.webhooks.sender import Sender
from forecourt.webhooks.sender_pool import MAX_CRASHES, SenderPool
from receivers import Receiver, Reply

HEADERS = {"webhook-id": "msg_1", "Content-Type": "application/json"}
HANG_S = 60.0  # only catches a hang


async def test_posts_and_answers_like_the_sender_in_process() -> None:
    async with Receiver() as rx:
        rx.reply("/teapot", Reply(418, b"short and stout", {"Retry-After": "7"}))
        pool = SenderPool("127.0.0.0/8", processes=2)
        try:
            ok, teapot = await asyncio.gather(
                pool.send(rx.url("/hook"), b'{"a":1}', HEADERS, 5.0),
                pool.send(rx.url("/teapot"), b'{"b":2}', HEADERS, 5.0),
            )
            assert len(pool.processes) == 2
            assert os.getpid() not in pool.processes
        finally:
            await pool.aclose()
    assert (ok.status_code, ok.response_excerpt, ok.error_class) == (200, "ok", None)
    assert (teapot.status_code, teapot.response_excerpt) == (418, "short and stout")
    assert teapot.retry_after_s == 7.0
    bodies = {r.path: (r.body, r.headers["webhook-id"]) for r in rx.received}
    assert bodies == {"/hook": (b'{"a":1}', "msg_1"), "/teapot": (b'{"b":2}', "msg_1")}


async def test_many_requests_share_the_processes_and_each_gets_its_own_answer() -> None:
    async with Receiver() as rx:
        for i in range(300):
            rx.reply(f"/n/{i}", Reply(200 + i % 3, f"answer {i}".encode()))
        pool = SenderPool("127.0.0.0/8", processes=2)
        try:
            # A timeout no loaded machine reaches: each answer is checked, not how fast it came.
            sends = (
                pool.send(rx.url(f"/n/{i}"), str(i).encode(), HEADERS, HANG_S) for i in range(300)
            )
            results = await asyncio.gather(*sends)
        finally:
            await pool.aclose()
    answers = [(r.status_code, r.response_excerpt) for r in results]
    assert answers == [(200 + i % 3, f"answer {i}") for i in range(300)]
    assert sorted(int(r.body) for r in rx.received) == list(range(300))
    assert {r.path for r in rx.received} == {f"/n/{i}" for i in range(300)}


async def test_the_ssrf_guard_holds_in_the_sender_process() -> None:
    async with Receiver() as rx:
        pool = SenderPool("false", processes=1)
        try:
            result = await pool.send(rx.url("/hook"), b"{}", HEADERS, 5.0)
        finally:
            await pool.aclose()
    assert result.error_class == "ssrf"
    assert "127.0.0.1" in (result.error_message or "")
    assert rx.received == []


async def test_timeouts_and_closed_connections_are_answered_as_such() -> None:
    async with Receiver() as rx:
        rx.reply("/slow", Reply(delay_s=5.0))
        rx.reply("/drop", Reply(close=True))
        pool = SenderPool("127.0.0.0/8", processes=1)
        try:
            slow, dropped = await asyncio.gather(
                pool.send(rx.url("/slow"), b"{}", HEADERS, 0.3),
                pool.send(rx.url("/drop"), b"{}", HEADERS, 5.0),
            )
        finally:
            await pool.aclose()
    assert slow.error_class == "timeout"
    assert dropped.error_class in {"connection", "response"}


async def test_a_process_that_hangs_without_exiting_ends_its_exchanges_as_timeouts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The pool's own deadline (the request's timeout plus a margin) ends what a stopped
    child never answers; the child is left alone, and answers again once it runs."""
    monkeypatch.setattr(sender_pool, "REPLY_MARGIN_S", 0.3)
    monkeypatch.setattr(sender_pool, "SWEEP_S", 0.1)
    async with Receiver() as rx:
        pool = SenderPool("127.0.0.0/8", processes=1)
        try:
            await pool.send(rx.url("/hook"), b"{}", HEADERS, 5.0)
            (child,) = pool.processes
            os.kill(child, signal.SIGSTOP)
            try:
                started = time.monotonic()
                hung = await asyncio.wait_for(
                    pool.send(rx.url("/hook"), b"{}", HEADERS, 0.2), HANG_S
                )
                waited = time.monotonic() - started
            finally:
                os.kill(child, signal.SIGCONT)
            after = await pool.send(rx.url("/hook"), b"{}", HEADERS, 5.0)
        finally:
            await pool.aclose()
    assert hung.error_class == "timeout"
    assert hung.error_message == "no complete answer within 0.2 s"
    assert waited >= 0.5  # the request's 0.2 s and the margin: never ended before its deadline
    assert after.status_code == 200


async def test_a_process_killed_mid_exchange_ends_it_as_internal_and_is_replaced() -> None:
    async with Receiver() as rx:
        rx.reply("/slow", Reply(delay_s=3.0))
        pool = SenderPool("127.0.0.0/8", processes=1)
        try:
            await pool.send(rx.url("/hook"), b"{}", HEADERS, 5.0)
            (first,) = pool.processes
            pending = asyncio.create_task(pool.send(rx.url("/slow"), b"{}", HEADERS, 10.0))
            await rx.wait_for(lambda: any(r.path == "/slow" for r in rx.received), what="slow")
            os.kill(first, signal.SIGKILL)
            lost = await asyncio.wait_for(pending, 5.0)
            again = await pool.send(rx.url("/hook"), b"{}", HEADERS, 5.0)
            (second,) = pool.processes
        finally:
            await pool.aclose()
    assert lost.error_class == "internal"
    assert "exited" in (lost.error_message or "")
    assert again.status_code == 200
    assert second != first
    assert not pool.local


async def test_a_process_that_keeps_dying_makes_the_pool_send_itself() -> None:
    async with Receiver() as rx:
        pool = SenderPool("127.0.0.0/8", processes=1)
        try:
            for _ in range(MAX_CRASHES):
                await pool.send(rx.url("/hook"), b"{}", HEADERS, 5.0)
                (pid,) = pool.processes
                os.kill(pid, signal.SIGKILL)
                await _until(lambda: not pool.processes)
            result = await pool.send(rx.url("/hook"), b"{}", HEADERS, 5.0)
            assert pool.local
            assert pool.processes == []
        finally:
            await pool.aclose()
    assert result.status_code == 200
    assert len(rx.received) == MAX_CRASHES + 1


async def test_closing_stops_every_process() -> None:
    async with Receiver() as rx:
        pool = SenderPool("127.0.0.0/8", processes=2)
        await asyncio.gather(*(pool.send(rx.url(), b"{}", HEADERS, 5.0) for _ in range(4)))
        pids = pool.processes
        await pool.aclose()
    assert len(pids) == 2
    assert not any(_running(pid) for pid in pids)
    with pytest.raises(RuntimeError, match="closed"):
        await pool.send(rx.url(), b"{}", HEADERS, 5.0)


async def test_the_processes_die_with_their_worker() -> None:
    """A worker killed with SIGKILL (no chance to close its pool) takes its senders along."""
    script = (
        "import asyncio, sys\n"
        "from forecourt.webhooks.sender_pool import SenderPool\n"
        "async def main():\n"
        "    pool = SenderPool('127.0.0.0/8', processes=2)\n"
        "    await asyncio.gather(*(pool.send(sys.argv[1], b'{}', {}, 5.0) for _ in range(4)))\n"
        "    print(*pool.processes, flush=True)\n"
        "    await asyncio.sleep(60)\n"
        "asyncio.run(main())\n"
    )
    async with Receiver() as rx:
        worker = await asyncio.create_subprocess_exec(
            sys.executable, "-c", script, rx.url(), stdout=asyncio.subprocess.PIPE
        )
        assert worker.stdout is not None
        line = await asyncio.wait_for(worker.stdout.readline(), 20.0)
        pids = [int(pid) for pid in line.split()]
        worker.kill()
        await worker.wait()
    assert len(pids) == 2 and len(rx.received) == 4
    await _until(lambda: not any(_running(pid) for pid in pids))


def test_the_setting_chooses_processes_or_none(tmp_path: Any) -> None:
    def made(**fields: Any) -> object:
        return sender_pool.from_settings(Settings(data_dir=tmp_path, **fields))

    assert isinstance(made(delivery_sender_processes=0), Sender)
    assert isinstance(made(delivery_sender_processes=3), SenderPool)
    automatic = made()
    expected = SenderPool if sender_pool.auto_processes() > 0 else Sender
    assert isinstance(automatic, expected)
    assert 0 <= sender_pool.auto_processes() <= sender_pool.MAX_AUTO_PROCESSES


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def _until(condition: Any, timeout_s: float = HANG_S) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)
