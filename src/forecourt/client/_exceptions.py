"""Errors raised by the Forecourt client.

ForecourtClientError
├── TransportError            the server could not be reached or did not answer
└── APIError                  the server answered with a problem (RFC 9457)
    ├── AuthenticationError   401
    ├── PermissionDenied      403
    ├── NotFoundError         404
    ├── ConflictError         409
    ├── PayloadTooLargeError  413
    ├── ValidationError       422 (``errors`` names each bad field)
    ├── RateLimitError        429 (``retry_after`` in seconds)
    └── ServerError           5xx
"""

from __future__ import annotations

from typing import Any


class ForecourtClientError(Exception):
    """Base of every client error."""


class TransportError(ForecourtClientError):
    """The request did not get an answer (connection refused, timeout, …)."""


class APIError(ForecourtClientError):
    """The server answered with an error; ``problem`` is its RFC 9457 body."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        self.title = str(problem.get("title", "Error"))
        self.detail = str(problem.get("detail", ""))
        super().__init__(f"{status} {self.title}: {self.detail}")


class AuthenticationError(APIError):
    """401: the API key is missing or not valid."""


class PermissionDenied(APIError):
    """403: the key lacks the scope."""


class NotFoundError(APIError):
    """404: no such resource in this tenant."""


class ConflictError(APIError):
    """409: the resource is in a conflicting state."""


class PayloadTooLargeError(APIError):
    """413: the body is over the server's cap."""


class ValidationError(APIError):
    """422: ``errors`` lists ``{"field", "message"}`` for each bad field."""

    @property
    def errors(self) -> list[dict[str, Any]]:
        found = self.problem.get("errors", [])
        return list(found) if isinstance(found, list) else []


class RateLimitError(APIError):
    """429: retry after ``retry_after`` seconds."""

    def __init__(self, status: int, problem: dict[str, Any], retry_after: float | None) -> None:
        super().__init__(status, problem)
        self.retry_after = retry_after


class ServerError(APIError):
    """5xx: the server failed."""


_BY_STATUS: dict[int, type[APIError]] = {
    401: AuthenticationError,
    403: PermissionDenied,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: ValidationError,
}


def error_for(status: int, problem: dict[str, Any], retry_after: str | None) -> APIError:
    """The exception for an error response."""
    if status == 429:
        seconds = float(retry_after) if retry_after and retry_after.isdigit() else None
        return RateLimitError(status, problem, seconds)
    if status >= 500:
        return ServerError(status, problem)
    return _BY_STATUS.get(status, APIError)(status, problem)
