"""Forecourt: the API and extensibility layer an application puts in front of itself."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
