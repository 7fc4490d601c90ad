"""Verify a webhook Forecourt sent, in the receiver (Standard Webhooks)."""

from __future__ import annotations

from collections.abc import Mapping

from forecourt.webhooks.signing import WebhookVerificationError, verify

DEFAULT_TOLERANCE_S = 300


def verify_webhook(
    secret: str,
    body: bytes | str,
    headers: Mapping[str, str],
    *,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
) -> None:
    """Raise WebhookVerificationError unless ``body`` was signed with ``secret`` (or, during a
    rotation, any of the signatures matches) within ``tolerance_s`` of now."""
    verify(secret, body, headers, tolerance_s=tolerance_s)


__all__ = ["WebhookVerificationError", "verify_webhook"]
