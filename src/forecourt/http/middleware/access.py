"""Who is calling, and may they: resolve the API key or session cookie, apply the rate
limit, add the rate-limit headers, and count the request in the key's usage.

Scope checks happen later, in the route's dependency; this layer never answers 401/403,
so public routes (sign-in) work with the same stack. An invalid key is treated as no key.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from http.cookies import SimpleCookie
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from forecourt.errors import RateLimited
from forecourt.http.problems import from_error
from forecourt.keys.auth import KeyAuthenticator
from forecourt.keys.usage import UsageRecorder
from forecourt.principal import Principal
from forecourt.ratelimit.headers import rate_limit_header_pairs, rate_limit_headers
from forecourt.ratelimit.policy import Policy
from forecourt.ratelimit.windows import Limiter

SESSION_COOKIE = "fc_session"
EXCLUDED_PREFIXES = (
    "/healthz",
    "/readyz",
    "/metrics",
    "/docs",
    "/redoc",
    "/openapi.json",
    "/static",
    "/favicon.ico",
)

SessionResolver = Callable[[str, str | None, str | None], Awaitable[tuple[Principal, str] | None]]


class AccessMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        authenticator: KeyAuthenticator,
        resolve_session: SessionResolver,
        limiter: Limiter,
        policy: Policy,
        usage: UsageRecorder,
        excluded: tuple[str, ...] = EXCLUDED_PREFIXES,
    ) -> None:
        self.app = app
        self.authenticator = authenticator
        self.resolve_session = resolve_session
        self.limiter = limiter
        self.policy = policy
        self.usage = usage
        self.excluded = excluded

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.excluded):
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        request_id = state.get("request_id")
        client = scope.get("client")
        ip = client[0] if client else None

        bearer = cookie = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer":
                    bearer = token.strip()
            elif name == b"cookie":
                cookie = value.decode("latin-1")

        principal: Principal | None = None
        if bearer is not None:
            key = await self.authenticator.authenticate(bearer)
            if key is not None:
                principal = Principal(
                    "key",
                    key.id,
                    key.tenant_id,
                    key.scopes,
                    ip,
                    request_id,
                    tier=key.tier,
                    rate_limits=key.rate_limits,
                )
        elif cookie is not None:
            morsel = SimpleCookie(cookie).get(SESSION_COOKIE)
            if morsel is not None and morsel.value:
                resolved = await self.resolve_session(morsel.value, ip, request_id)
                if resolved is not None:
                    principal, state["csrf_token"] = resolved
        state["principal"] = principal

        if principal is None:
            bucket, windows = f"ip:{ip}", self.policy.ip_windows
        else:
            bucket = f"{principal.actor_type}:{principal.actor_id}"
            windows = self.policy.for_key(principal.tier, principal.rate_limits)
        decision = await self.limiter.hit(bucket, windows)

        if not decision.allowed:
            headers = rate_limit_headers(decision)
            if principal is not None and principal.actor_type == "key" and principal.actor_id:
                self.usage.record(principal.actor_id, principal.tenant_id, 429, limited=True)
            extra: dict[str, Any] = {}
            if decision.violated is not None:
                v = decision.violated
                extra = {"policy": v.name, "limit": v.limit, "window_s": v.seconds}
            error = RateLimited(
                f"Rate limit exceeded; retry in {decision.retry_after_s} s.", **extra
            )
            await from_error(error, scope["path"], headers)(scope, receive, send)
            return

        raw_headers = rate_limit_header_pairs(decision)
        status = 500

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), *raw_headers]
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            if principal is not None and principal.actor_type == "key" and principal.actor_id:
                self.usage.record(principal.actor_id, principal.tenant_id, status)
