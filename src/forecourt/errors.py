"""Errors raised by services, each mapped to one RFC 9457 problem type.

ForecourtError
├── InvalidInput          422  a field's value is not acceptable
├── InvalidPackage        422  a plugin package or its manifest is not acceptable (every problem)
├── UntrustedPackage      422  a plugin package is unsigned or signed by no trusted publisher
├── DependencyInstallFailed 422  a plugin's declared dependencies could not be installed
├── NotFound              404  no such resource in this tenant
├── Conflict              409  the resource already exists or is in the wrong state
├── Unauthenticated       401  no valid credentials
├── Forbidden             403  valid credentials without the needed scope
├── CsrfFailed            403  a cookie-authenticated write without its CSRF token
├── PayloadTooLarge       413  the request body is over the configured cap
├── RateLimited           429  a rate-limit window is exhausted
└── SandboxUnavailable    503  the sandbox protections the admin requires are missing here
"""

from __future__ import annotations

from typing import Any, ClassVar


class ForecourtError(Exception):
    """Something went wrong."""

    status: ClassVar[int] = 500
    slug: ClassVar[str] = "internal"
    title: ClassVar[str] = "Internal error"

    def __init__(
        self, detail: str | None = None, *, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        self.detail = detail or (self.__doc__ or self.title).strip().splitlines()[0]
        self.headers = headers or {}
        self.extra = extra
        super().__init__(self.detail)


class InvalidInput(ForecourtError):
    """The request contains an invalid value."""

    status = 422
    slug = "invalid-input"
    title = "Invalid input"

    def __init__(self, detail: str | None = None, *, field: str, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.field = field
        self.extra["errors"] = [{"field": field, "message": self.detail}]


class InvalidPackage(ForecourtError):
    """The plugin package is not valid."""

    status = 422
    slug = "invalid-package"
    title = "Invalid plugin package"

    def __init__(self, detail: str | None = None, *, errors: list[dict[str, str]]) -> None:
        super().__init__(detail)
        self.extra["errors"] = errors


class UntrustedPackage(ForecourtError):
    """The plugin package is not signed by a trusted publisher."""

    status = 422
    slug = "untrusted-package"
    title = "Untrusted plugin package"


class DependencyInstallFailed(ForecourtError):
    """The plugin's dependencies could not be installed."""

    status = 422
    slug = "dependency-install-failed"
    title = "Plugin dependencies could not be installed"


class NotFound(ForecourtError):
    """The resource does not exist."""

    status = 404
    slug = "not-found"
    title = "Not found"


class Conflict(ForecourtError):
    """The resource conflicts with its current state."""

    status = 409
    slug = "conflict"
    title = "Conflict"


class Unauthenticated(ForecourtError):
    """A valid API key or session is required."""

    status = 401
    slug = "unauthenticated"
    title = "Unauthenticated"


class Forbidden(ForecourtError):
    """The credentials do not grant this action."""

    status = 403
    slug = "forbidden"
    title = "Forbidden"


class CsrfFailed(Forbidden):
    """A cookie-authenticated write needs the X-CSRF-Token header of its session."""

    slug = "csrf-failed"
    title = "CSRF check failed"


class PayloadTooLarge(ForecourtError):
    """The request body is too large."""

    status = 413
    slug = "payload-too-large"
    title = "Payload too large"


class RateLimited(ForecourtError):
    """Too many requests; retry after the time given."""

    status = 429
    slug = "rate-limited"
    title = "Too many requests"


class SandboxUnavailable(ForecourtError):
    """The plugin sandbox cannot provide the protections this installation requires."""

    status = 503
    slug = "sandbox-unavailable"
    title = "Sandbox unavailable"
