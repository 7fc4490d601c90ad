"""Group commit of finished attempts: whatever finished while one write was under way goes
into the next one, so a busy worker writes hundreds of attempts per transaction and an idle
one writes each at once.

A write that fails for a database reason is retried with backoff for up to ``give_up_s``;
after that its attempts are reported as not recorded (their deliveries stay leased and are
attempted again once the lease expires: at-least-once).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from forecourt.webhooks.queue import Finished

LOG = logging.getLogger("forecourt.webhooks")

BATCH_MAX = 500  # attempts in one transaction
BACKOFF_FIRST_S = 0.05
BACKOFF_MAX_S = 2.0

Write = Callable[[Sequence[Finished]], Awaitable[None]]
Recorded = Callable[[Sequence[Finished]], None]


class Recorder:
    """Queues finished attempts and writes them in batches with ``write``."""

    def __init__(
        self, write: Write, *, give_up_s: float, on_recorded: Recorded | None = None
    ) -> None:
        self._write = write
        self._on_recorded = on_recorded  # told of each batch once written (live streams)
        self._give_up_s = give_up_s
        self._waiting: list[tuple[Finished, asyncio.Future[bool]]] = []
        self._task: asyncio.Task[None] | None = None

    @property
    def busy(self) -> bool:
        return bool(self._waiting) or (self._task is not None and not self._task.done())

    def submit(self, finished: Finished) -> asyncio.Future[bool]:
        """Queue ``finished``; the future says whether it was recorded. The write goes ahead
        even if the caller stops waiting (cancelled): an attempt that was made is kept."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.append((finished, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name="webhook-attempt-recorder")
        return future

    async def drained(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for everything queued to be written."""
        deadline = time.monotonic() + timeout_s
        while self.busy:
            task = self._task
            remaining = deadline - time.monotonic()
            if task is None or remaining <= 0:
                return not self.busy
            await asyncio.wait({task}, timeout=remaining)
        return True

    async def _drain(self) -> None:
        while self._waiting:
            batch = self._waiting[:BATCH_MAX]
            del self._waiting[:BATCH_MAX]
            recorded = await self._write_with_retries([finished for finished, _ in batch])
            for _, future in batch:
                if not future.done():
                    future.set_result(recorded)

    async def _write_with_retries(self, batch: Sequence[Finished]) -> bool:
        backoff_s = BACKOFF_FIRST_S
        give_up = time.monotonic() + self._give_up_s
        while True:
            try:
                await self._write(batch)
            except (DBAPIError, PoolTimeout, OSError) as exc:
                if time.monotonic() + backoff_s > give_up:
                    LOG.error(
                        "could not record %d attempts (%s); they will be made again",
                        len(batch),
                        brief(exc),
                    )
                    return False
                LOG.warning("recording %d attempts failed (%s); retrying", len(batch), brief(exc))
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, BACKOFF_MAX_S)
            except Exception:
                LOG.exception("recording %d attempts failed unexpectedly", len(batch))
                return False
            else:
                if self._on_recorded is not None:
                    try:
                        self._on_recorded(batch)
                    except Exception:
                        LOG.exception("after-record hook failed")
                return True


def brief(exc: BaseException) -> str:
    """The first line of an error: database errors otherwise carry the whole statement."""
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    lines = str(cause).strip().splitlines()
    text = lines[0] if lines else ""
    return f"{type(cause).__name__}: {text}"[:300] if text else type(cause).__name__
