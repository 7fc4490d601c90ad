"""Kept for its importers: ``registered`` lives in ``forecourt.observability.registry``."""

from __future__ import annotations

from forecourt.observability.registry import registered

__all__ = ["registered"]
