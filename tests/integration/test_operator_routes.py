"""The operator (``system:admin``): what spans tenants is the operator's alone.

The routes that need ``system:admin`` are read from the app itself (every route whose
dependencies include ``require("system:admin")``), so a new installation-wide route is
covered without anyone listing it here: tenant B's admin key (made through the tenants API)
gets 403 on each and changes nothing, and the operator's own key gets past the check.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from sqlalchemy import func, select

from conftest import Harness
from forecourt.app import create_app
from forecourt.audit.models import AuditEntry
from forecourt.scopes import SYSTEM_ADMIN, expand
from forecourt.settings import Settings
from forecourt.tenants.models import Tenant

PASSWORD = "correct horse battery"
SESSION_COOKIE = "fc_session"
# What the operator's routes must include at least (so an enumeration that finds nothing, or
# a guard that was dropped from one of them, fails).
KNOWN = {
    ("POST", "/api/v1/plugins"),
    ("DELETE", "/api/v1/plugins/{plugin_id}"),
    ("GET", "/api/v1/plugins/sandbox"),
    ("PUT", "/api/v1/plugins/{plugin_id}/availability"),
    ("POST", "/api/v1/tenants"),
    ("GET", "/api/v1/tenants"),
    ("POST", "/api/v1/tenants/{tenant}/suspend"),
    ("DELETE", "/api/v1/tenants/{tenant}"),
    ("PUT", "/api/v1/tenants/{tenant}/host-permissions/{permission}"),
    ("GET", "/api/v1/plugins/publisher-keys"),
    ("POST", "/api/v1/plugins/publisher-keys"),
    ("DELETE", "/api/v1/plugins/publisher-keys/{publisher_key_id}"),
    ("GET", "/api/v1/stats/operations"),
    ("GET", "/api/v1/stats/operations/slow"),
    ("GET", "/api/v1/system/logs"),
    ("GET", "/api/v1/system/logs/stats"),
}
PATH_VALUES = {
    "plugin_id": "forecourt.csv-export",
    "permission": "host_metrics",
    "publisher_key_id": "pbk_unknown",
}


def _walk(dependant: Dependant) -> Iterator[Any]:
    for sub in dependant.dependencies:
        yield sub.call
        yield from _walk(sub)


def _scope(call: Any) -> str | None:
    if not getattr(call, "__name__", "").startswith("require_"):
        return None
    scope = inspect.getclosurevars(call).nonlocals.get("scope")
    return scope if isinstance(scope, str) else None


def operator_routes(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path) of every route that requires system:admin."""
    found = []
    for route in iter_route_contexts(app.routes):
        if not isinstance(route.original_route, APIRoute):
            continue
        if SYSTEM_ADMIN in {_scope(call) for call in _walk(route.dependant)}:
            found += [(method, route.path_format or "") for method in sorted(route.methods or ())]
    return found


@pytest.fixture(scope="module")
def routes(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, str]]:
    data: Path = tmp_path_factory.mktemp("operator-routes")
    return operator_routes(create_app(Settings(data_dir=data, secret_key="op-" + "k" * 32)))


def fill(path: str, tenant: str) -> str:
    for name, value in {**PATH_VALUES, "tenant": tenant}.items():
        path = path.replace("{" + name + "}", value)
    assert "{" not in path, f"no value for a parameter of {path}: add it to PATH_VALUES"
    return path


async def call(h: Harness, method: str, path: str, headers: dict[str, str]) -> httpx.Response:
    body: dict[str, Any] | None = {} if method in ("POST", "PUT", "PATCH") else None
    return await h.client.request(method, path, json=body, headers=headers)


def test_the_operator_routes_are_found(routes: list[tuple[str, str]]) -> None:
    assert set(routes) >= KNOWN, sorted(KNOWN - set(routes))


async def test_tenant_b_admin_gets_403_on_every_installation_wide_route(
    harness: Harness, routes: list[tuple[str, str]]
) -> None:
    h = harness
    tenant_b = await h.create_tenant("beta")
    victim = await h.create_tenant("victim")
    # A key with admin in the default tenant is no operator either: admin does not imply it.
    default_admin = await h.create_key(["admin"])
    assert SYSTEM_ADMIN not in expand(["admin"])

    async def snapshot() -> tuple[int, int, int]:
        async with h.fc.sessionmaker() as session:
            tenants = await session.scalar(select(func.count()).select_from(Tenant))
            audit = await session.scalar(select(func.count()).select_from(AuditEntry))
            suspended = await session.scalar(
                select(func.count()).select_from(Tenant).where(Tenant.suspended_at.is_not(None))
            )
        return int(tenants or 0), int(audit or 0), int(suspended or 0)

    before = await snapshot()
    for key in (tenant_b["admin_key"], default_admin["key"]):
        for method, path in routes:
            response = await call(h, method, fill(path, victim["slug"]), h.auth(key))
            assert response.status_code == 403, (method, path, response.text)
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["required_scope"] == SYSTEM_ADMIN
    assert await snapshot() == before
    # B's admin cannot hand itself the operator's scope either.
    grant = await h.client.post(
        "/api/v1/keys",
        json={"name": "up", "scopes": [SYSTEM_ADMIN]},
        headers=h.auth(tenant_b["admin_key"]),
    )
    assert grant.status_code in (403, 422), grant.text
    # The operator's key passes the check on every one of them (read-only ones answer 200).
    for method, path in routes:
        if method == "GET":
            response = await call(h, method, fill(path, victim["slug"]), h.auth())
            assert response.status_code == 200, (path, response.text)


async def sign_in(h: Harness, email: str, role: str, key: str, tenant: str) -> dict[str, str]:
    created = await h.client.post(
        "/api/v1/users",
        json={"email": email, "password": PASSWORD, "role": role},
        headers=h.auth(key),
    )
    assert created.status_code == 201, created.text
    login = await h.client.post(
        "/api/v1/auth/login", json={"email": email, "password": PASSWORD, "tenant": tenant}
    )
    assert login.status_code == 200, login.text
    for header in login.headers.get_list("set-cookie"):
        name, _, rest = header.partition("=")
        if name.strip() == SESSION_COOKIE:
            return {"Cookie": f"{SESSION_COOKIE}={rest.split(';')[0]}"}
    raise AssertionError("no session cookie")


async def test_owner_users_of_the_default_tenant_are_operators(harness: Harness) -> None:
    h = harness
    tenant_b = await h.create_tenant("beta")
    owner = await sign_in(h, "root@example.com", "owner", h.owner_key, "default")
    admin = await sign_in(h, "admin@example.com", "admin", h.owner_key, "default")
    b_owner = await sign_in(h, "owner@beta.example", "owner", tenant_b["admin_key"], "beta")
    listed = await h.client.get("/api/v1/tenants", headers=owner)
    assert listed.status_code == 200, listed.text
    for cookie in (admin, b_owner):
        refused = await h.client.get("/api/v1/tenants", headers=cookie)
        assert refused.status_code == 403, refused.text
        sandbox = await h.client.get("/api/v1/plugins/sandbox", headers=cookie)
        assert sandbox.status_code == 403


async def test_the_first_owner_key_holds_system_admin(harness: Harness) -> None:
    h = harness
    keys = await h.client.get("/api/v1/keys", headers=h.auth())
    [owner] = [k for k in keys.json()["items"] if k["name"] == "owner"]
    assert set(owner["scopes"]) == {"admin", SYSTEM_ADMIN}
