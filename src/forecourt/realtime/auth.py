"""Who opens a WebSocket, and may they: an API key (``Authorization: Bearer``, or the
subprotocol ``forecourt.bearer.<key>`` for browsers, which cannot set headers) or a signed-in
session cookie from an allowed Origin; the caller's rate limit is charged once per connection.

A WebSocket handshake does not pass through the access middleware; it resolves credentials
with the middleware's own ``CredentialResolver``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.websockets import WebSocket

from forecourt.http.client_ip import ClientAddress, parse_networks
from forecourt.http.middleware.access import CredentialResolver, session_token
from forecourt.principal import Principal
from forecourt.streams.subscriber import FORBIDDEN, TOO_MANY, UNAUTHENTICATED, Ended

if TYPE_CHECKING:
    from forecourt.core import Forecourt

PROTOCOL = "forecourt.v1"
BEARER_PROTOCOL_PREFIX = "forecourt.bearer."


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated caller and how to check, later, that it still is."""

    principal: Principal
    revalidate: Callable[[], Awaitable[bool]]


def subprotocol(websocket: WebSocket) -> str | None:
    """The subprotocol to answer with: ``forecourt.v1`` when offered, else the offered bearer
    token (a browser refuses a handshake that answers none of the protocols it offered)."""
    offered = [str(p) for p in websocket.scope.get("subprotocols") or ()]
    if PROTOCOL in offered:
        return PROTOCOL
    for protocol in offered:
        if protocol.startswith(BEARER_PROTOCOL_PREFIX):
            return protocol
    return None


def _allowed_origins(fc: Forecourt) -> set[str]:
    return {
        o.strip().rstrip("/") for o in fc.settings.stream_allowed_origins.split(",") if o.strip()
    }


def origin_allowed(websocket: WebSocket, fc: Forecourt) -> bool:
    """A cookie is sent by the browser whatever page opens the socket: only the server's own
    origin (or a configured one) may use it."""
    origin = websocket.headers.get("origin")
    if not origin:
        return False
    origin = origin.rstrip("/")
    if origin in _allowed_origins(fc):
        return True
    host = websocket.headers.get("host", "")
    return origin in {f"http://{host}", f"https://{host}"}


async def authenticate(websocket: WebSocket, fc: Forecourt) -> Caller | Ended:
    """The caller behind the handshake, or why it is refused (a close code and reason).
    Credentials resolve as for HTTP (``CredentialResolver``): the address's limit comes
    before any lookup, and unknown session tokens are remembered."""
    client = websocket.scope.get("client")
    trusted = parse_networks(fc.settings.trusted_proxies)
    ip = ClientAddress(trusted).resolve(client[0] if client else None, websocket.scope["headers"])
    ip_bucket = f"ip:{ip}"
    bearer: str | None = None
    authorization = websocket.headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        bearer = token.strip()
    else:
        for protocol in websocket.scope.get("subprotocols") or ():
            if str(protocol).startswith(BEARER_PROTOCOL_PREFIX):
                bearer = str(protocol)[len(BEARER_PROTOCOL_PREFIX) :]
                break
    session = None
    if bearer is None:
        session = session_token(websocket.headers.get("cookie"))
        if session is not None and not origin_allowed(websocket, fc):
            await fc.limiter.hit(ip_bucket, fc.policy.ip_windows)
            return Ended(FORBIDDEN, "the Origin may not use a session cookie here")
    resolver = CredentialResolver.for_app(
        fc.authenticator, fc.resolve_session, fc.limiter, fc.policy
    )
    resolved = await resolver.resolve(ip, None, bearer, session)
    if resolved.refusal is not None:
        return Ended(TOO_MANY, f"rate limited; retry in {resolved.refusal.retry_after_s} s")
    principal = resolved.principal
    if principal is None:
        decision = await fc.limiter.hit(ip_bucket, fc.policy.ip_windows)
        if not decision.allowed:
            return Ended(TOO_MANY, f"rate limited; retry in {decision.retry_after_s} s")
        return Ended(UNAUTHENTICATED, "missing or invalid credentials")
    if principal.tenant_id in fc.suspensions:
        return Ended(FORBIDDEN, "the tenant is suspended")
    bucket = f"{principal.actor_type}:{principal.actor_id}"
    decision = await fc.limiter.hit(
        bucket, fc.policy.for_key(principal.tier, principal.rate_limits)
    )
    if not decision.allowed:
        return Ended(TOO_MANY, f"rate limited; retry in {decision.retry_after_s} s")
    if bearer is not None:
        return Caller(principal, _key_check(fc, bearer))
    assert session is not None
    return Caller(principal, _session_check(fc, session, ip))


def _key_check(fc: Forecourt, raw: str) -> Callable[[], Awaitable[bool]]:
    async def revalidate() -> bool:
        again = fc.authenticator.recall(raw)
        if again.lookup is None:
            return again.key is not None
        return await fc.authenticator.load(again.lookup) is not None

    return revalidate


def _session_check(fc: Forecourt, token: str, ip: str | None) -> Callable[[], Awaitable[bool]]:
    async def revalidate() -> bool:
        return await fc.resolve_session(token, ip, None) is not None

    return revalidate
