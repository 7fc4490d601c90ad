"""Support for the sandbox tests: a worker pool, and the corpus of plugins it runs.

The corpus (``corpus/hostile.py``) is one plugin package whose functions each try something.
``async with sandbox() as box`` gives a fresh pool; ``await box.run("name", input)`` calls
``hostile.name`` in it. The tests need root (as Forecourt runs here and in CI): they assert
that every protection is in force.

(A helper module rather than a ``conftest.py``: the suite imports its root conftest as
``conftest``, which a second one would shadow.)
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forecourt.plugins.sandbox import CallResult, SandboxConfig, WorkerPool, WorkerSpec
from forecourt.webhooks.ssrf import Resolver

CORPUS = Path(__file__).parent / "corpus"
# One work root for the whole run, so the protections are probed once (detect() caches);
# the pool creates it on first use.
WORK_ROOT = Path(tempfile.gettempdir()) / f"forecourt-sandbox-tests-{os.getpid()}"
atexit.register(shutil.rmtree, WORK_ROOT, ignore_errors=True)
HANG_S = 60.0  # only catches a hang


async def until(condition: Callable[[], bool], what: str = "the condition") -> None:
    """Poll ``condition`` until it holds; fail after :data:`HANG_S`."""
    deadline = time.monotonic() + HANG_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def corpus_spec(function: str, **fields: Any) -> WorkerSpec:
    """A spec running ``hostile.<function>``; ``fields`` override the spec's (``limits``...)."""
    fields.setdefault("key", f"test.{function}@1.0.0")
    fields.setdefault("package_dir", CORPUS)
    fields["entry_point"] = f"hostile:{function}"
    return WorkerSpec(**fields)


@dataclass
class Box:
    """A pool under test."""

    pool: WorkerPool

    async def run(
        self,
        function: str,
        input: Any = None,
        *,
        timeout_s: float | None = None,
        config: dict[str, Any] | None = None,
        **fields: Any,
    ) -> CallResult:
        """Call ``hostile.<function>(input)``."""
        spec = corpus_spec(function, **fields)
        return await self.pool.call(spec, input=input, config=config or {}, timeout_s=timeout_s)

    async def output(self, function: str, input: Any = None, **fields: Any) -> Any:
        """The output of a call that must succeed."""
        result = await self.run(function, input, **fields)
        assert result.status == "ok", result
        return result.output


def config(**fields: Any) -> SandboxConfig:
    """The tests' configuration; ``fields`` override it."""
    fields.setdefault("work_root", WORK_ROOT)
    fields.setdefault("allow_private", "127.0.0.0/8")
    return SandboxConfig(**fields)


@contextlib.asynccontextmanager
async def sandbox(resolver: Resolver | None = None, **fields: Any) -> AsyncIterator[Box]:
    """A started pool with :func:`config` (``fields`` override it), closed on exit;
    ``resolver`` answers the egress proxy's DNS lookups."""
    pool = WorkerPool(config(**fields), resolver=resolver)
    await pool.start()
    try:
        yield Box(pool)
    finally:
        await pool.close(deadline_s=5.0)
