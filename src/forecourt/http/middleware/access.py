"""Who is calling, and may they: resolve the API key or session cookie, apply the rate
limit, add the rate-limit headers, and count the request in the key's usage.

Scope checks happen later, in the route's dependency; this layer never answers 401/403,
so public routes (sign-in) work with the same stack. An invalid key is treated as no key.

The per-IP limit comes before any lookup, so a flood of bogus keys or cookies costs no
database query once the address is over its limit:

- credentials memory can settle (a key in the cache, a malformed key, a key or session token
  known to be unknown) need no lookup: a valid key goes to its own bucket, anything else is
  anonymous and charged to the address's bucket;
- credentials that need a lookup are first checked against the address's bucket without
  charging it (a peek): an address over its limit gets 429 and no lookup; a lookup that
  finds nothing charges the address's bucket, a valid key or session its own bucket.

Only anonymous and failed requests count against an address, so one address carrying heavy
traffic for valid keys (a NAT, a backend) is never throttled by the per-IP limit; it is
refused only the lookups of new credentials while failures from it exceed the limit.
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from forecourt.errors import RateLimited
from forecourt.http.client_ip import STATE_KEY as CLIENT_IP_STATE
from forecourt.http.client_ip import ClientAddress, Network
from forecourt.http.problems import from_error
from forecourt.keys.auth import KeyAuthenticator
from forecourt.keys.cache import MAX_NEGATIVES, NEGATIVE_TTL_S, NegativeCache
from forecourt.keys.usage import UsageRecorder
from forecourt.observability.instruments import rate_limit_decided
from forecourt.principal import Principal
from forecourt.ratelimit.headers import rate_limit_header_pairs, rate_limit_headers
from forecourt.ratelimit.policy import Policy
from forecourt.ratelimit.windows import Decision, Limiter
from forecourt.users.service import token_hash

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


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a request's credentials came to: its principal (None: anonymous or invalid), the
    address's refusal when it is over its limit and a lookup was needed (none was made), and
    a session's CSRF token."""

    principal: Principal | None
    refusal: Decision | None = None
    csrf_token: str | None = None


class CredentialResolver:
    """Resolve an API key or a session token as the module docstring says, for HTTP (the
    middleware) and the WebSocket handshake alike: one per authenticator (``for_app``), so
    both share the memory of unknown session tokens."""

    def __init__(
        self,
        authenticator: KeyAuthenticator,
        resolve_session: SessionResolver,
        limiter: Limiter,
        policy: Policy,
    ) -> None:
        self.authenticator = authenticator
        self.resolve_session = resolve_session
        self.limiter = limiter
        self.policy = policy
        # Session tokens that resolved to nothing (digests): they never become valid.
        self.bad_sessions = NegativeCache(NEGATIVE_TTL_S, MAX_NEGATIVES)

    @classmethod
    def for_app(
        cls,
        authenticator: KeyAuthenticator,
        resolve_session: SessionResolver,
        limiter: Limiter,
        policy: Policy,
    ) -> CredentialResolver:
        """The resolver of ``authenticator``'s application (made on first use)."""
        resolver = _RESOLVERS.get(authenticator)
        if resolver is None:
            resolver = _RESOLVERS[authenticator] = cls(
                authenticator, resolve_session, limiter, policy
            )
        return resolver

    async def resolve(
        self,
        ip: str | None,
        request_id: str | None,
        bearer: str | None,
        session_token: str | None,
    ) -> Credentials:
        """The principal of ``bearer`` (an API key) or else of ``session_token``."""
        ip_bucket = f"ip:{ip}"
        if bearer is not None:
            recalled = self.authenticator.recall(bearer)
            key = recalled.key
            if recalled.lookup is not None:
                refusal = await self._refused_before_lookup(ip_bucket)
                if refusal is not None:
                    return Credentials(None, refusal)
                key = await self.authenticator.load(recalled.lookup)
            if key is None:
                return Credentials(None)
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
            return Credentials(principal)
        if session_token:
            digest = token_hash(session_token)
            if self.bad_sessions.hit(digest):
                return Credentials(None)
            refusal = await self._refused_before_lookup(ip_bucket)
            if refusal is not None:
                return Credentials(None, refusal)
            resolved = await self.resolve_session(session_token, ip, request_id)
            if resolved is None:
                self.bad_sessions.add(digest)
                return Credentials(None)
            return Credentials(resolved[0], csrf_token=resolved[1])
        return Credentials(None)

    async def _refused_before_lookup(self, ip_bucket: str) -> Decision | None:
        """The address's refusal when it is over its limit, so no lookup is spent on it."""
        decision = await self.limiter.peek(ip_bucket, self.policy.ip_windows)
        return None if decision.allowed else decision


_RESOLVERS: weakref.WeakKeyDictionary[KeyAuthenticator, CredentialResolver] = (
    weakref.WeakKeyDictionary()
)


def session_token(cookie_header: str | None) -> str | None:
    """The session token of a ``Cookie`` header, if it holds one."""
    if not cookie_header:
        return None
    try:
        morsel = SimpleCookie(cookie_header).get(SESSION_COOKIE)
    except CookieError:
        return None
    return morsel.value if morsel is not None and morsel.value else None


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
        trusted_proxies: Sequence[Network] = (),
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.policy = policy
        self.usage = usage
        self.excluded = excluded
        self.client_address = ClientAddress(trusted_proxies)
        self.credentials = CredentialResolver.for_app(
            authenticator, resolve_session, limiter, policy
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.excluded):
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        request_id = state.get("request_id")
        client = scope.get("client")
        ip = self.client_address.resolve(client[0] if client else None, scope["headers"])
        state[CLIENT_IP_STATE] = ip
        ip_bucket = f"ip:{ip}"

        bearer = cookie = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer":
                    bearer = token.strip()
            elif name == b"cookie":
                cookie = value.decode("latin-1")

        token = None
        if bearer is None and cookie is not None:
            morsel = SimpleCookie(cookie).get(SESSION_COOKIE)
            token = morsel.value if morsel is not None else None
        resolved = await self.credentials.resolve(ip, request_id, bearer, token)
        principal, refusal = resolved.principal, resolved.refusal
        if resolved.csrf_token is not None:
            state["csrf_token"] = resolved.csrf_token
        state["principal"] = principal

        if refusal is not None:
            decision = refusal
        elif principal is None:
            decision = await self.limiter.hit(ip_bucket, self.policy.ip_windows)
        else:
            bucket = f"{principal.actor_type}:{principal.actor_id}"
            windows = self.policy.for_key(principal.tier, principal.rate_limits)
            decision = await self.limiter.hit(bucket, windows)
        violated = decision.violated
        rate_limit_decided(
            "ip" if principal is None else principal.actor_type,
            decision.allowed,
            violated.name if violated is not None else None,
        )

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
