"""Prometheus collectors registered once in the default registry, even when a module that
defines one is imported again (tests reload modules; the registry refuses duplicates)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from prometheus_client import REGISTRY

T = TypeVar("T")


def registered(factory: Callable[[], T], exposed_name: str) -> T:
    """``factory()``'s collector, or the one already registered under ``exposed_name``
    (the name as scraped, e.g. ``forecourt_webhook_attempts_total`` for a Counter)."""
    try:
        return factory()
    except ValueError:
        existing = REGISTRY._names_to_collectors.get(exposed_name)
        if existing is None:
            raise
        return existing  # type: ignore[return-value]
