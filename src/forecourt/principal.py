"""Who is making a request: an API key, a signed-in user, or Forecourt itself."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from forecourt import scopes as scope_rules

ActorType = Literal["key", "user", "system"]


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller, carried into services for tenancy and the audit log."""

    actor_type: ActorType
    actor_id: str | None
    tenant_id: str
    scopes: frozenset[str]
    ip: str | None = None
    request_id: str | None = None
    via_cookie: bool = False
    tier: str | None = None
    rate_limits: dict[str, int] = field(default_factory=dict)

    def has(self, scope: str) -> bool:
        return scope in self.scopes


def system(tenant_id: str) -> Principal:
    """Forecourt acting on its own (bootstrap, CLI): holds every scope."""
    return Principal("system", None, tenant_id, scope_rules.ALL_SCOPES)
