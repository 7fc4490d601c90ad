"""The server process's garbage collector, tuned for a long-running, allocation-heavy loop.

CPython's collector walks every tracked object of a generation when it collects it. A started
server holds about 166,000 of them that live as long as the process (modules, the app, ORM
mappers, caches); walking them in every full collection paused a busy server for 80 to
120 ms, three times in one fan-out benchmark run. ``settle()`` moves what startup built out
of the collector's view (``gc.freeze``) and lets more objects be born between young-generation
collections, so the short-lived ones of a request or a delivery die before a collection has
to look at them, instead of being promoted into the older generations.

Reference counting frees objects as before: only unreachable cycles among the frozen objects
wait for ``unsettle()``.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 20_000  # allocations between young-generation collections (CPython: 700)

_before: list[tuple[int, int, int]] = []  # the thresholds ``settle`` replaced


def settle() -> None:
    """Call once the process has started: freeze what exists, widen the young generation."""
    gc.collect()
    gc.freeze()
    young, older, oldest = gc.get_threshold()
    if not _before:
        _before.append((young, older, oldest))
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)


def unsettle() -> None:
    """Call when stopping: the frozen objects are collectable again, the thresholds as they
    were before ``settle``."""
    gc.unfreeze()
    if _before:
        gc.set_threshold(*_before.pop())
