"""The Forecourt Python SDK: publish events, manage webhook endpoints and deliveries, and
verify the webhooks Forecourt sends.

    from forecourt.client import Client, verify_webhook

    with Client("http://127.0.0.1:8000", api_key) as fc:
        fc.events.publish("dashboard.created", {"id": 42})
"""

from __future__ import annotations

from forecourt.client._client import AsyncClient, Client
from forecourt.client._exceptions import (
    APIError,
    AuthenticationError,
    ConflictError,
    ForecourtClientError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDenied,
    RateLimitError,
    ServerError,
    TransportError,
    ValidationError,
)
from forecourt.client._verify import WebhookVerificationError, verify_webhook

__all__ = [
    "APIError",
    "AsyncClient",
    "AuthenticationError",
    "Client",
    "ConflictError",
    "ForecourtClientError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDenied",
    "RateLimitError",
    "ServerError",
    "TransportError",
    "ValidationError",
    "WebhookVerificationError",
    "verify_webhook",
]
