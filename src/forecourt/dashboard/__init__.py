"""The dashboard: the built single-page app, served by Forecourt itself (see docs/dashboard.md)."""
