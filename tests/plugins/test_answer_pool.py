"""The answer pool's processes can die (killed, out of memory): the run they were reading still
ends with a record, and the next large answer gets a fresh pool."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from plugin_support import execute, executions, files, install, instance, start

from forecourt.plugins.answers import AnswerPool

EXIT_WAIT_S = 30.0
CODE = """
def big(payload):
    return {"records": [{"pad": "x" * 300_000}]}
"""


def kill_processes(pool: AnswerPool) -> None:
    """SIGKILL every process of the pool and wait until they are gone."""
    executor = pool._executor
    assert executor is not None
    pids = list(executor._processes)  # type: ignore[attr-defined]
    assert pids
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + EXIT_WAIT_S
    for process in executor._processes.values():  # type: ignore[attr-defined]
        process.join(max(deadline - time.monotonic(), 0))
        assert process.exitcode is not None


async def test_a_dead_answer_pool_fails_one_run_with_a_record_and_is_replaced(
    harness_factory: Any,
) -> None:
    h = await start(harness_factory)
    await install(h, files(CODE, entry_point="plugin:big"))
    created = await instance(h)
    payload: dict[str, Any] = {"records": []}
    first = await execute(h, created["id"], payload)
    assert first["status"] == "ok", first
    pool = h.fc.plugin_runner.answers
    kill_processes(pool)

    failed = await execute(h, created["id"], payload)
    again = await execute(h, created["id"], payload)

    assert (failed["status"], failed["error_class"]) == ("error", "WorkerFailed"), failed
    assert failed["output"] is None
    assert again["status"] == "ok", again
    assert again["output"] == {"records": [{"pad": "x" * 300_000}]}
    assert pool.answers_read == 3
    listed = await executions(h, "com.example.upper")
    assert [(e["id"], e["status"]) for e in listed] == [
        (again["id"], "ok"),
        (failed["id"], "error"),
        (first["id"], "ok"),
    ]
