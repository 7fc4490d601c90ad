"""The audit log: an append-only record of every change."""
