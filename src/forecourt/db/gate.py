"""The write gate: on SQLite, the process's busy write transactions take turns.

SQLite has one writer at a time. Connections of one process that compete for it wait in
SQLite's busy handler, which sleeps (1 ms, 2 ms, 5 ms, ... up to 100 ms) between tries, so two
hot writers slow each other down far more than their work explains. The hot writers (event
ingest, the delivery queue) pass through this gate instead and queue up in order without
sleeping; readers never wait (WAL). On PostgreSQL the gate is open: row locks do the job.
"""

from __future__ import annotations

import asyncio
from types import TracebackType


class WriteGate:
    """An async context manager; serializing (SQLite) or a no-op (PostgreSQL)."""

    def __init__(self, *, serialize: bool) -> None:
        self._lock = asyncio.Lock() if serialize else None

    async def __aenter__(self) -> None:
        if self._lock is not None:
            await self._lock.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._lock is not None:
            self._lock.release()
