"""The pool: warm workers reused, broken ones replaced, reloads and shutdown, honest results."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from pathlib import Path

from sandbox_support import CORPUS, HANG_S, WORK_ROOT, Box, sandbox, until

from forecourt.plugins.sandbox import Limits, WorkerSpec

BROKEN = Path(__file__).parent / "corpus_broken"
NAP = "test.nap@1.0.0"


def busy(box: Box, key: str = NAP) -> int:
    """Calls of ``key`` that hold a worker right now."""
    keyed = box.pool._keys.get(key)
    return 0 if keyed is None else len(keyed.busy)


async def settled(box: Box) -> None:
    """Wait until the pool's background work (warm starts) is over."""
    while box.pool._tasks:
        await asyncio.wait_for(asyncio.gather(*box.pool._tasks, return_exceptions=True), HANG_S)


async def test_warm_worker_is_reused() -> None:
    async with sandbox() as box:
        first = await box.run("pid")
        second = await box.run("pid")
    assert first.status == second.status == "ok"
    assert first.output == second.output


async def test_worker_that_exits_mid_call_is_replaced() -> None:
    async with sandbox() as box:
        before = await box.output("nap", 0)
        crashed = await box.run("exit_now", 3)
        assert crashed.status == "killed", crashed
        assert crashed.error_class == "WorkerDied"
        assert "exit status 3" in (crashed.error_message or "")
        after_crash = await box.run("exit_now", 3)
        assert after_crash.status == "killed"  # a new worker each time, crashing each time
        assert await box.output("nap", 0) == before  # other keys are untouched


async def test_crashed_worker_is_replaced_and_the_next_call_works() -> None:
    async with sandbox() as box:
        first = await box.output("nap", 0)
        crashed = await box.run("nap", "not a number")  # TypeError inside: the worker survives
        assert crashed.status == "error" and crashed.error_class == "TypeError"
        assert await box.output("nap", 0) == first
        timeout = await box.run("nap", 60, timeout_s=0.2)
        assert timeout.status == "timeout"
        replacement = await box.output("nap", 0)
        assert replacement != first
        assert await box.output("nap", 0) == replacement


async def test_stdout_cannot_forge_a_result() -> None:
    async with sandbox() as box:
        result = await box.run("forge")
    assert result.status == "ok"
    assert result.output == "genuine"
    assert '"output": "FORGED"' in result.logs  # what it printed is only a log


async def test_exceptions_become_error_results() -> None:
    async with sandbox() as box:
        failed = await box.run("fail", "boom")
        not_json = await box.run("not_json")
    assert (failed.status, failed.error_class, failed.error_message) == (
        "error",
        "ValueError",
        "boom",
    )
    assert "Traceback" in failed.logs and "boom" in failed.logs
    assert failed.output is None
    assert not_json.status == "error" and not_json.error_class == "TypeError"
    assert "JSON-serialisable" in (not_json.error_message or "")


async def test_import_error_is_reported_on_every_call() -> None:
    spec = WorkerSpec(key="test.broken@1.0.0", package_dir=BROKEN, entry_point="broken:run")
    async with sandbox() as box:
        for _ in range(2):
            result = await box.pool.call(spec, input=None, config={})
            assert result.status == "error"
            assert result.error_class == "RuntimeError"
            assert result.error_message == "this plugin cannot be imported"
        assert (await box.pool.call(spec, input=None, config={})).status == "error"


async def test_unrunnable_specs_and_inputs_are_refused() -> None:
    missing = WorkerSpec(key="test.missing@1", package_dir=CORPUS / "nope", entry_point="x:y")
    async with sandbox() as box:
        assert (await box.pool.call(missing, input=None, config={})).status == "refused"
        bad_input = await box.run("upper", {1, 2})
        assert bad_input.status == "refused" and "JSON" in (bad_input.error_message or "")
        assert await box.output("upper", "fine") == "FINE"


async def test_logs_are_captured_and_truncated() -> None:
    async with sandbox() as box:
        short = await box.run("chatty", 3)
        long = await box.run("chatty", 10_000)
    assert short.logs.splitlines()[0].startswith("line 000000")
    assert len(short.logs.splitlines()) == 3
    assert long.status == "ok"
    assert len(long.logs.encode()) < 17 * 1024
    assert "more bytes of output dropped" in long.logs


async def test_host_api_config_log_metrics_events() -> None:
    async with sandbox() as box:
        result = await box.run("api", {"n": 1}, config={"table": "orders", "secret": "x"})
        again = await box.run("api", None)
    assert result.status == "ok", result
    assert result.output["config"] == {"table": "orders", "secret": "x"}
    assert result.output["token"].startswith("NotAvailable: connection 'slack'")
    assert 'working step=1 payload={"n": 1}' in result.logs
    assert "printed" in result.logs
    assert result.metrics == [
        {"name": "rows", "value": 12, "labels": {"table": "orders"}},
        {"name": "latency_ms", "value": 3.5, "labels": {}},
    ]
    assert result.events == [
        {"type": "export.finished", "data": {"rows": 12}, "subject": "orders"},
        {"type": "export.audit", "data": [1, 2]},
    ]
    assert again.output["config"] == {}  # nothing leaks from one call to the next
    assert len(again.metrics) == 2


async def test_reload_lets_calls_finish_and_starts_fresh_workers() -> None:
    async with sandbox() as box:
        first = await box.output("nap", 0)
        slow = asyncio.create_task(box.run("nap", 1.0))
        await until(lambda: busy(box) == 1, "the call under way")
        await box.pool.reload(NAP)
        finished = await slow
        assert finished.status == "ok" and finished.output == first  # finished on the old worker
        fresh = await box.output("nap", 0)
    assert fresh != first  # which was retired afterwards


async def test_concurrency_per_key_is_capped() -> None:
    seen: list[int] = []

    async def watch() -> None:
        while True:
            seen.append(box.pool.workers(NAP))
            await asyncio.sleep(0)

    async with sandbox(max_workers_per_key=2) as box:
        watcher = asyncio.create_task(watch())
        pids = await asyncio.gather(*(box.output("nap", 0.3) for _ in range(4)))
        watcher.cancel()
    # Two workers at most at any moment, and two served the four calls between them.
    assert max(seen) == 2
    assert len(set(pids)) == 2


async def test_close_waits_for_calls_then_kills_and_refuses() -> None:
    async with sandbox() as box:
        finishing = asyncio.create_task(box.run("nap", 0.5))
        hanging = asyncio.create_task(box.run("nap", 3600, key="test.hang@1"))
        await until(lambda: busy(box) == busy(box, "test.hang@1") == 1, "both calls under way")
        # Only a kill ends the hanging call: a close that waited for it would hang.
        await asyncio.wait_for(box.pool.close(deadline_s=5.0), HANG_S)
        assert (await finishing).status == "ok"
        assert (await hanging).status == "killed"
        assert (await box.run("nap", 0)).status == "refused"


async def test_after_the_whole_corpus_the_pool_still_serves() -> None:
    hostile = [
        ("fork_loop", 5), ("raw_syscalls", None), ("escapes", None), ("sockets", None),
        ("forge", None), ("open_many", None), ("write_big", 100), ("allocate", 4096),
        ("fail", "x"), ("not_json", None), ("exit_now", 9), ("chatty", 5000),
        ("read_file", "/etc/shadow"), ("connect", ["127.0.0.1", 5432]), ("nap", 30),
    ]  # fmt: skip
    limits = Limits(cpu_s=2)
    async with sandbox(warm_workers=2) as box:
        assert await box.output("dispatch", {"function": "upper", "input": "a"}) == "A"
        statuses = set()
        for function, argument in hostile:
            request = {"function": function, "input": argument}
            result = await box.run("dispatch", request, timeout_s=1.0, limits=limits)
            statuses.add(result.status)
            assert result.status in ("ok", "error", "killed", "timeout"), (function, result)
        assert statuses == {"ok", "error", "killed", "timeout"}
        outputs = [
            await box.output("dispatch", {"function": "upper", "input": "after"}, limits=limits)
            for _ in range(3)
        ]
    assert outputs == ["AFTER"] * 3


async def test_a_cancelled_call_does_not_leave_its_answer_to_the_next() -> None:
    async with sandbox() as box:
        first = await box.output("nap", 0)
        abandoned = asyncio.create_task(box.run("nap", 3600))
        await until(lambda: busy(box) == 1, "the call under way")
        abandoned.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await abandoned
        assert await box.output("nap", 0) not in (first, None)  # a new worker answers


async def test_a_package_holding_the_work_root_is_refused() -> None:
    spec = WorkerSpec(key="test.wide@1", package_dir=WORK_ROOT.parent, entry_point="x:y")
    async with sandbox() as box:
        result = await box.pool.call(spec, input=None, config={})
    assert result.status == "refused"
    assert "work_root" in (result.error_message or "")


ORPHAN_SCRIPT = """
import asyncio, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from sandbox_support import sandbox

async def main():
    async with sandbox(work_root=Path(sys.argv[2])) as box:
        print(await box.output("nap", 0), flush=True)
        asyncio.create_task(box.run("nap", 3600))
        while not box.pool._keys["test.nap@1.0.0"].busy:
            await asyncio.sleep(0.01)
        print("busy", flush=True)
        await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_workers_die_with_forecourt(tmp_path: Path) -> None:
    """A worker whose Forecourt process is killed is killed too, even in the middle of a call."""
    here = str(Path(__file__).parent)
    forecourt = await asyncio.create_subprocess_exec(
        sys.executable, "-c", ORPHAN_SCRIPT, here, str(tmp_path), stdout=asyncio.subprocess.PIPE
    )
    try:
        assert forecourt.stdout is not None
        worker_pid = int(await asyncio.wait_for(forecourt.stdout.readline(), HANG_S))
        under_way = await asyncio.wait_for(forecourt.stdout.readline(), HANG_S)
        assert under_way == b"busy\n"  # the long call is under way
        assert _running(worker_pid)
    finally:
        forecourt.kill()
        await forecourt.wait()
    deadline = time.monotonic() + HANG_S
    while _running(worker_pid) and time.monotonic() < deadline:  # noqa: ASYNC110 - another process
        await asyncio.sleep(0.05)
    assert not _running(worker_pid)


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def test_retire_stops_a_keys_workers_for_good() -> None:
    key = NAP
    async with sandbox(warm_workers=2) as box:
        first = await box.output("nap", 0)
        slow = asyncio.create_task(box.run("nap", 1.0))
        await until(lambda: busy(box) == 1 and box.pool.workers(key) >= 2, "a warm spare")
        await box.pool.retire(key)
        finished = await slow
        assert finished.status == "ok"  # the call in flight finished on its worker
        await settled(box)  # any warm start, had one been made, is over
        assert box.pool.workers(key) == 0
        assert children() == set(), "a worker of the retired key is still running"
        # A later call (the version installed again) starts a fresh worker.
        assert await box.output("nap", 0) != first


def children() -> set[int]:
    """The processes whose parent is this one."""
    found = set()
    me = str(os.getpid())
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me:
            found.add(int(stat.parent.name))
    return found
