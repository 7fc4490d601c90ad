"""The Prometheus registry: collectors registered once, and the exposition of a scrape.

With ``PROMETHEUS_MULTIPROC_DIR`` set (``forecourt serve`` and ``forecourt worker`` set it,
see ``multiprocess.py``), every process writes its values to files in that folder and a
scrape reads them all, so any process answers for every process sharing the folder.
Without it (an embedded app, the tests), a scrape answers for this process alone.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import TypeVar

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from forecourt.observability.multiprocess import MULTIPROC_ENV

T = TypeVar("T")


def registered(factory: Callable[[], T], exposed_name: str) -> T:
    """``factory()``'s collector, or the one already registered under ``exposed_name``
    (the name as scraped, e.g. ``forecourt_webhook_attempts_total`` for a Counter); tests
    reload modules, and the registry refuses duplicates."""
    try:
        return factory()
    except ValueError:
        existing = REGISTRY._names_to_collectors.get(exposed_name)
        if existing is None:
            raise
        return existing  # type: ignore[return-value]


def multiprocess_dir() -> str | None:
    """The folder processes share their values through, when multiprocess mode is on."""
    path = os.environ.get(MULTIPROC_ENV)
    return path if path and os.path.isdir(path) else None


def exposition(extra: Iterable[Collector] = ()) -> bytes:
    """The text of a scrape: every process's values (multiprocess mode) or this one's, then
    ``extra`` collectors, which compute their figures once for the whole installation."""
    path = multiprocess_dir()
    if path is None:
        text = generate_latest(REGISTRY)
    else:
        shared = CollectorRegistry(auto_describe=False)
        MultiProcessCollector(shared, path)  # type: ignore[no-untyped-call]
        text = generate_latest(shared)
    collectors = list(extra)
    if collectors:
        scrape = CollectorRegistry(auto_describe=False)
        for collector in collectors:
            scrape.register(collector)
        text += generate_latest(scrape)
    return text
