"""Idle warm workers are retired: a key (plugin version and tenant) unused for
``idle_timeout_s`` has its workers stopped and is forgotten, so they do not pile up.

With a fake clock, :meth:`WorkerPool.sweep` decides exactly at the timeout; with a tiny
timeout, the pool's own background sweep does it (the test waits for the count to drop).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
from sandbox_support import config, corpus_spec, until

from forecourt.plugins.runner import sandbox_config
from forecourt.plugins.sandbox import WorkerPool
from forecourt.settings import Settings

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox tests need root")

IDLE_TIMEOUT_S = 300.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_unused_keys_lose_their_workers_at_the_timeout() -> None:
    clock = FakeClock()
    pool = WorkerPool(config(idle_timeout_s=IDLE_TIMEOUT_S, warm_workers=1), clock=clock)
    await pool.start()
    try:
        tenants = [corpus_spec("upper", key=f"test.upper@1.0.0/tenant-{n}") for n in range(3)]
        for spec in tenants:
            result = await pool.call(spec, input="abc", config={})
            assert (result.status, result.output) == ("ok", "ABC")
        # Each tenant's key keeps its warm worker after the call.
        await until(lambda: all(pool.workers(s.key) == 1 for s in tenants))

        clock.now += IDLE_TIMEOUT_S - 1
        busy = await pool.call(tenants[0], input="x", config={})  # tenant 0 is in use
        assert busy.ok
        assert await pool.sweep() == 0  # nobody unused for the timeout yet
        assert [pool.workers(s.key) for s in tenants] == [1, 1, 1]

        clock.now += 1
        assert await pool.sweep() == 2  # tenants 1 and 2: unused for exactly the timeout
        assert [pool.workers(s.key) for s in tenants] == [1, 0, 0]
        # Nothing restarts them: no warm worker is kept for a forgotten key.
        await asyncio.sleep(0.3)
        assert [pool.workers(s.key) for s in tenants] == [1, 0, 0]

        clock.now += IDLE_TIMEOUT_S
        assert await pool.sweep() == 1
        assert [pool.workers(s.key) for s in tenants] == [0, 0, 0]

        # A later call starts a fresh worker.
        again = await pool.call(tenants[1], input="def", config={})
        assert (again.status, again.output) == ("ok", "DEF")
        assert pool.workers(tenants[1].key) == 1
    finally:
        await pool.close(deadline_s=5.0)


async def test_a_key_with_a_call_in_flight_is_kept() -> None:
    clock = FakeClock()
    pool = WorkerPool(config(idle_timeout_s=IDLE_TIMEOUT_S), clock=clock)
    await pool.start()
    try:
        spec = corpus_spec("sleep_forever")
        call = asyncio.create_task(pool.call(spec, input=None, config={}, timeout_s=2.0))
        await until(lambda: spec.key in pool._keys and bool(pool._keys[spec.key].busy))
        clock.now += IDLE_TIMEOUT_S * 10
        assert await pool.sweep() == 0
        assert pool.workers(spec.key) == 1
        result = await call
        assert result.status == "timeout", result
    finally:
        await pool.close(deadline_s=5.0)


async def test_the_background_sweep_retires_idle_workers() -> None:
    pool = WorkerPool(config(idle_timeout_s=0.2, warm_workers=1))
    await pool.start()
    try:
        spec = corpus_spec("upper")
        assert (await pool.call(spec, input="a", config={})).ok
        await until(lambda: pool.workers(spec.key) == 0)
    finally:
        await pool.close(deadline_s=5.0)


def test_the_settings_reach_the_pool(tmp_path: Any) -> None:
    settings = Settings(data_dir=tmp_path, plugin_idle_timeout_s=42.0, plugin_max_threads=128)
    chosen = sandbox_config(settings)
    assert (chosen.idle_timeout_s, chosen.max_threads) == (42.0, 128)
    assert (Settings(data_dir=tmp_path).plugin_idle_timeout_s) == 300.0
