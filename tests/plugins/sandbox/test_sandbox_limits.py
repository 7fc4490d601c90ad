"""Resource limits: each is enforced by the kernel, and a worker that hits one is replaced."""

from __future__ import annotations

import asyncio
import errno

from sandbox_support import sandbox

from forecourt.plugins.sandbox import Limits

MIB = 1024 * 1024
HANG_S = 60.0  # only catches a hang


async def test_wall_clock_timeout_kills_the_worker() -> None:
    async with sandbox() as box:
        first = await box.output("nap", 0)
        assert await box.output("nap", 0) == first  # the same warm worker, until...
        # The plugin sleeps for an hour: only the 0.5 s timeout ends the call.
        result = await asyncio.wait_for(box.run("nap", 3600, timeout_s=0.5), HANG_S)
        assert result.status == "timeout", result
        assert "0.5 s" in (result.error_message or "")
        after = await box.output("nap", 0)
    assert after != first  # ...it was killed and replaced


async def test_cpu_limit_kills_a_spinning_plugin() -> None:
    limits = Limits(cpu_s=1)
    async with sandbox() as box:
        light = await box.output("burn", 0.2, limits=limits)
        # No wall clock to end it: a spinning plugin stops only at RLIMIT_CPU ("killed", where
        # a timeout would answer "timeout").
        result = await asyncio.wait_for(box.run("burn", -1, timeout_s=3600, limits=limits), HANG_S)
        assert result.status == "killed", result
        assert "CPU time limit" in (result.error_message or "")
        assert result.cpu_ms is not None and result.cpu_ms >= 900
        again = await box.output("burn", 0.2, limits=limits)
    assert again != light  # a fresh worker


async def test_address_space_limit_stops_a_large_allocation() -> None:
    async with sandbox() as box:
        assert await box.output("allocate", 32) == 32 * MIB
        result = await box.run("allocate", 2048)
        assert result.status in ("error", "killed"), result
        if result.status == "error":
            assert result.error_class == "MemoryError"
        assert await box.output("allocate", 32) == 32 * MIB


async def test_memory_limit_is_configurable() -> None:
    async with sandbox() as box:
        small = await box.run("allocate", 200, limits=Limits(memory_mib=128))
        assert small.error_class == "MemoryError", small
        assert await box.output("allocate", 200, limits=Limits(memory_mib=512)) == 200 * MIB


async def test_file_size_limit_stops_a_huge_file() -> None:
    async with sandbox() as box:
        seen = await box.output("write_big", 1024)  # tries to write 1 GiB
        assert seen["errno"] == errno.EFBIG, seen
        assert seen["size"] == 64 * MIB  # the default cap, exactly
        small = await box.output("write_big", 8, limits=Limits(file_mib=4))
    assert small["errno"] == errno.EFBIG and small["size"] == 4 * MIB


async def test_open_files_limit() -> None:
    async with sandbox() as box:
        seen = await box.output("open_many")
        assert seen["errno"] == errno.EMFILE, seen
        assert 40 < seen["opened"] < 64
        more = await box.output("open_many", limits=Limits(open_files=200))
    assert 150 < more["opened"] < 200
