"""Forecourt's recent log records, kept in memory: a bounded ring per process, and the
count of records by level for each of the last 60 minutes.

``LogRing`` is a ``logging.Handler`` on the ``forecourt`` logger, so it hears what every
part of Forecourt logs in this process (the API, and the workers when they run in it). A
record keeps its time, level, logger, message, request id and exception type, never its
traceback or arguments; values that look like credentials (API keys, webhook secrets,
bearer tokens, session tokens) are masked in the message, whatever logged them.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

RING_CAPACITY = 2000
STATS_MINUTES = 60
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
ROOT_LOGGER = "forecourt"
MAX_MESSAGE_CHARS = 2000
MASK = "[masked]"
# API keys (fck_...), webhook secrets (whsec_...), bearer credentials, and the value of a
# ``name=value`` or ``name: value`` whose name says it is secret.
_SECRETS = re.compile(
    r"(?P<name>(?i:password|passphrase|secret|token|api[_-]?key|authorization|cookie)\w*"
    r"[\"']?\s*[=:]\s*)(?P<value>(?i:bearer\s+)?\S+)"
    r"|fck_[A-Za-z0-9_\-]+"
    r"|whsec_[A-Za-z0-9+/=_\-]+"
    r"|(?i:bearer)\s+[A-Za-z0-9._~+/=\-]+"
)


@dataclass(frozen=True)
class LogEntry:
    at: float  # epoch seconds
    level: str
    logger: str
    message: str
    request_id: str | None
    exception: str | None


def mask(text: str) -> str:
    """``text`` with everything that looks like a credential replaced by ``[masked]``."""
    return _SECRETS.sub(lambda m: (m.group("name") or "") + MASK, text)


class LogRing(logging.Handler):
    """The last ``capacity`` records, and counts by level per minute for the last hour."""

    def __init__(
        self, capacity: int = RING_CAPACITY, clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(logging.DEBUG)
        self._clock = clock
        self._entries: deque[LogEntry] = deque(maxlen=capacity)
        self._minutes: list[tuple[int, dict[str, int]] | None] = [None] * STATS_MINUTES
        self._ring_lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = mask(record.getMessage()[:MAX_MESSAGE_CHARS])
            exception = (
                record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else None
            )
            entry = LogEntry(
                record.created,
                _standard_level(record.levelno),
                record.name,
                message,
                getattr(record, "request_id", None),
                exception,
            )
            minute = int(self._clock() // 60)
            with self._ring_lock:
                self._entries.append(entry)
                slot = self._minutes[minute % STATS_MINUTES]
                if slot is None or slot[0] != minute:
                    slot = self._minutes[minute % STATS_MINUTES] = (minute, {})
                slot[1][entry.level] = slot[1].get(entry.level, 0) + 1
        except Exception:
            self.handleError(record)
        _last_resort(self, record)

    def entries(
        self, *, level: int = logging.NOTSET, since: float | None = None, limit: int | None = None
    ) -> list[LogEntry]:
        """Records at ``level`` or above, after ``since`` (epoch s), newest last, at most
        ``limit`` of the newest."""
        with self._ring_lock:
            snapshot = list(self._entries)
        chosen = [
            e
            for e in snapshot
            if logging.getLevelName(e.level) >= level and (since is None or e.at > since)
        ]
        return chosen[-limit:] if limit else chosen

    def counts(self) -> dict[str, int]:
        """Records by level over the last 60 minutes (the current one included)."""
        first = int(self._clock() // 60) - STATS_MINUTES + 1
        totals = dict.fromkeys(LEVELS, 0)
        with self._ring_lock:
            for slot in self._minutes:
                if slot is not None and slot[0] >= first:
                    for name, n in slot[1].items():
                        totals[name] = totals.get(name, 0) + n
        return totals

    def clear(self) -> None:
        with self._ring_lock:
            self._entries.clear()
            self._minutes = [None] * STATS_MINUTES


def _standard_level(levelno: int) -> str:
    """The standard level at or below ``levelno`` (custom levels fold into one)."""
    for name in reversed(LEVELS):
        if levelno >= logging.getLevelName(name):
            return name
    return "DEBUG"


def _last_resort(handler: logging.Handler, record: logging.LogRecord) -> None:
    """What logging would have done had this handler not been there: with no other handler
    on the record's way up, warnings and worse still reach stderr (``logging.lastResort``)."""
    logger: logging.Logger | None = logging.getLogger(record.name)
    while logger is not None:
        if any(h is not handler for h in logger.handlers):
            return
        if not logger.propagate:
            break
        logger = logger.parent
    last = logging.lastResort
    if last is not None and record.levelno >= last.level:
        last.handle(record)


RING = LogRing()
"""This process's ring."""


def install(ring: LogRing = RING) -> None:
    """Attach ``ring`` to the ``forecourt`` logger (once), which then lets INFO through
    unless a level was configured for it."""
    logger = logging.getLogger(ROOT_LOGGER)
    if ring not in logger.handlers:
        logger.addHandler(ring)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
