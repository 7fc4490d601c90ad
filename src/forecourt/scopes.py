"""Scopes: ``resource:action`` plus ``admin``.

``admin`` grants everything inside its tenant; ``resource:write`` also grants
``resource:read``. ``system:admin`` is the installation operator's: it alone spans tenants
(plugin packages, publisher keys, sandbox settings, tenants) and ``admin`` does not imply it.
``webhooks:secrets`` reveals and rotates webhook secrets and shows custom header values and
URL credentials unmasked; ``admin`` implies it.
"""

from __future__ import annotations

from collections.abc import Iterable

from forecourt.errors import InvalidInput

ADMIN = "admin"
SYSTEM_ADMIN = "system:admin"
WEBHOOK_SECRETS = "webhooks:secrets"
RESOURCE_ACTIONS: dict[str, tuple[str, ...]] = {
    "keys": ("read", "write"),
    "events": ("read", "publish"),
    "event-types": ("read", "write"),
    "webhooks": ("read", "write", "secrets"),
    "deliveries": ("read", "write"),
    "plugins": ("read", "write", "execute"),
    "metrics": ("read", "write"),
    "alerts": ("read", "write"),
    "connections": ("read", "write"),
    "consents": ("read", "write"),
    "audit-log": ("read",),
    "users": ("read", "write"),
    "stats": ("read",),
    "system": ("admin",),
}
ALL_SCOPES: frozenset[str] = frozenset(
    {ADMIN} | {f"{r}:{a}" for r, actions in RESOURCE_ACTIONS.items() for a in actions}
)
# What ``admin`` grants: everything but the operator's installation-wide scope.
TENANT_SCOPES: frozenset[str] = ALL_SCOPES - {SYSTEM_ADMIN}
READ_SCOPES: frozenset[str] = frozenset(s for s in ALL_SCOPES if s.endswith(":read"))


def expand(scopes: Iterable[str]) -> frozenset[str]:
    """Every scope that ``scopes`` grant, implications included."""
    granted = set(scopes)
    if ADMIN in granted:
        return TENANT_SCOPES | (granted & {SYSTEM_ADMIN})
    for scope in list(granted):
        resource, _, action = scope.partition(":")
        if action == "write" and f"{resource}:read" in ALL_SCOPES:
            granted.add(f"{resource}:read")
    return frozenset(granted)


def validate(scopes: Iterable[str], field: str = "scopes") -> list[str]:
    """The scopes, deduplicated and sorted; InvalidInput naming the first unknown one."""
    result = sorted(set(scopes))
    for scope in result:
        if scope not in ALL_SCOPES:
            raise InvalidInput(f"Unknown scope {scope!r}.", field=field)
    if not result:
        raise InvalidInput("At least one scope is required.", field=field)
    return result
