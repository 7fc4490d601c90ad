"""The privilege matrix: no way up.

For every route that acts on a key, a user or a webhook secret, a weaker principal tries it and
gets 403, and nothing changes: every row of keys, users, sign-in sessions and endpoints is as it
was (re-read from the database and, with the owner key, through the API) and the audit log has
no new entry. Reads a weaker principal may make show no secret and, for endpoints, masked
header values and query strings. A few allowed calls on covered targets close the matrix, so
the refusals are the rule's doing, not a malformed request's.

The routes are enumerated from the application: a new route under /api/v1/keys or
/api/v1/users, or a new webhook secret route, fails ``test_every_route_is_in_the_matrix`` until
it has a row here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi.routing import APIRoute, iter_route_contexts
from sqlalchemy import func, select

from conftest import Harness
from forecourt.app import create_app
from forecourt.audit.models import AuditEntry
from forecourt.keys.models import ApiKey
from forecourt.settings import Settings
from forecourt.users.models import User, UserSession
from forecourt.webhooks.models import Endpoint

PASSWORD = "correct horse battery"
NEW_PASSWORD = "a brand new passphrase"
SESSION_COOKIE = "fc_session"
HEADER_VALUE = "Bearer receiver-token-123"
QUERY = "token=query-secret-456"
LOOPBACK = "127.0.0.0/8"  # the endpoint's receiver (nothing listens; it is disabled anyway)
VOLATILE = {"last_used_at", "last_login_at"}  # moved by the requests themselves
MATRIX_PREFIXES = ("/api/v1/keys", "/api/v1/users")
WEBHOOK_ROUTES = {("GET", "/api/v1/webhooks"), ("GET", "/api/v1/webhooks/{endpoint_id}")}


def later(days: float) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat()


@dataclass
class World:
    """The principals and targets of the matrix, all in the default tenant."""

    h: Harness
    ids: dict[str, str] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)  # name -> raw key
    sessions: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (token, csrf)

    def headers(self, actor: str) -> dict[str, str]:
        if actor in self.keys:
            return {"Authorization": f"Bearer {self.keys[actor]}"}
        token, csrf = self.sessions[actor]
        return {"Cookie": f"{SESSION_COOKIE}={token}", "X-CSRF-Token": csrf}


async def login(h: Harness, email: str) -> tuple[str, str]:
    response = await h.client.post(
        "/api/v1/auth/login", json={"email": email, "password": PASSWORD}
    )
    assert response.status_code == 200, response.text
    token = response.cookies.get(SESSION_COOKIE)
    if token is None:  # the cookie is Secure: read it from the header on plain http
        header = next(
            h for h in response.headers.get_list("set-cookie") if h.startswith(SESSION_COOKIE)
        )
        token = header.split(";", 1)[0].split("=", 1)[1]
    return token, response.json()["csrf_token"]


async def build_world(h: Harness) -> World:
    world = World(h)
    me = await h.client.get("/api/v1/auth/me", headers=h.auth())
    world.ids["owner_key"] = me.json()["actor_id"]
    world.keys["owner_key"] = h.owner_key
    for name, scopes, extra in (
        ("keys_writer", ["keys:write"], {}),
        ("reader", ["keys:read"], {}),
        ("pro_reader", ["keys:read"], {"tier": "pro"}),
        ("child", ["keys:write"], {"expires_at": later(1), "tier": "free"}),
        ("users_writer", ["users:write"], {}),
        ("webhooks_writer", ["webhooks:write"], {}),
    ):
        created = await h.create_key(scopes, **extra)
        world.ids[name] = created["id"]
        world.keys[name] = created["key"]
    for role in ("owner", "admin", "member"):
        email = f"{role}@example.com"
        response = await h.client.post(
            "/api/v1/users",
            json={"email": email, "password": PASSWORD, "role": role},
            headers=h.auth(),
        )
        assert response.status_code == 201, response.text
        world.ids[f"{role}_user"] = response.json()["id"]
        world.sessions[f"{role}_user"] = await login(h, email)
    response = await h.client.post(
        "/api/v1/webhooks",
        json={
            "url": f"http://127.0.0.1:9/hook?{QUERY}",
            "headers": {"Authorization": HEADER_VALUE},
            "enabled": False,
        },
        headers=h.auth(),
    )
    assert response.status_code == 201, response.text
    world.ids["endpoint"] = response.json()["id"]
    return world


async def snapshot(h: Harness) -> dict[str, Any]:
    """Every row that a refused call could have changed, and the size of the audit log."""
    state: dict[str, Any] = {}
    async with h.fc.sessionmaker() as session:
        for model in (ApiKey, User, UserSession, Endpoint):
            columns = [c.key for c in model.__mapper__.column_attrs if c.key not in VOLATILE]
            rows = (await session.scalars(select(model))).all()
            state[model.__tablename__] = sorted(
                tuple((c, repr(getattr(row, c))) for c in columns) for row in rows
            )
        state["audit_entries"] = await session.scalar(select(func.count()).select_from(AuditEntry))
    for path in ("/api/v1/keys?limit=200", "/api/v1/users", "/api/v1/webhooks?limit=200"):
        # Re-read with the owner key (a refusal that went through may have taken its power).
        response = await h.client.get(path, headers=h.auth())
        if response.status_code != 200:
            state[path] = response.text
            continue
        body = response.json()
        items = body["items"] if isinstance(body, dict) else body
        state[path] = [{k: v for k, v in item.items() if k not in VOLATILE} for item in items]
    return state


Check = Callable[[World, httpx.Response], None]


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    route: str  # the path as the application declares it
    actor: str
    params: dict[str, str] = field(default_factory=dict)  # path parameter -> World.ids name
    body: dict[str, Any] | None = None
    expect: int = 403
    check: Check | None = None

    def path(self, world: World) -> str:
        return self.route.format(**{k: world.ids[v] for k, v in self.params.items()})


def no_key_secret(world: World, response: httpx.Response) -> None:
    assert "key_hash" not in response.text
    assert world.keys["owner_key"] not in response.text
    assert '"key"' not in response.text


def no_password(world: World, response: httpx.Response) -> None:
    assert "password" not in response.text
    assert "argon2" not in response.text


def masked(world: World, response: httpx.Response) -> None:
    body = response.json()
    for endpoint in body.get("items", [body]):
        assert endpoint["headers"] == {"Authorization": "***"}
        assert endpoint["url"] == "http://127.0.0.1:9/hook?***"
    assert "receiver-token" not in response.text
    assert "query-secret" not in response.text
    assert "whsec_" not in response.text


KEY = "/api/v1/keys/{key_id}"
USER = "/api/v1/users/{user_id}"
ENDPOINT = "/api/v1/webhooks/{endpoint_id}"
OWNER_KEY = {"key_id": "owner_key"}
OWNER_USER = {"user_id": "owner_user"}
EP = {"endpoint_id": "endpoint"}

REFUSED = [
    # -- keys: what a keys:write key may not hand out ------------------------------------
    Case("grant admin", "POST", "/api/v1/keys", "keys_writer", body={"scopes": ["admin"]}),
    Case(
        "grant a scope not held",
        "POST",
        "/api/v1/keys",
        "keys_writer",
        body={"scopes": ["keys:read", "users:write"]},
    ),
    Case(
        "grant the operator scope",
        "POST",
        "/api/v1/keys",
        "keys_writer",
        body={"scopes": ["system:admin"]},
    ),
    Case(
        "a higher tier",
        "POST",
        "/api/v1/keys",
        "keys_writer",
        body={"scopes": ["keys:read"], "tier": "pro"},
    ),
    Case(
        "higher limits",
        "POST",
        "/api/v1/keys",
        "keys_writer",
        body={"scopes": ["keys:read"], "rate_limits": {"minute": 1000}},
    ),
    Case(
        "a child outliving its creator (no expiry)",
        "POST",
        "/api/v1/keys",
        "child",
        body={"scopes": ["keys:read"]},
    ),
    Case(
        "a child outliving its creator (later expiry)",
        "POST",
        "/api/v1/keys",
        "child",
        body={"scopes": ["keys:read"], "expires_at": later(30)},
    ),
    # -- keys: acting on the owner key -------------------------------------------------------
    Case("update the owner key", "PATCH", KEY, "keys_writer", OWNER_KEY, {"name": "mine"}),
    Case("narrow the owner key", "PATCH", KEY, "keys_writer", OWNER_KEY, {"scopes": ["keys:read"]}),
    Case("rotate the owner key", "POST", KEY + "/rotate", "keys_writer", OWNER_KEY),
    Case("revoke the owner key", "POST", KEY + "/revoke", "keys_writer", OWNER_KEY),
    Case("delete the owner key", "DELETE", KEY, "keys_writer", OWNER_KEY),
    Case("usage of the owner key", "GET", KEY + "/usage", "keys_writer", OWNER_KEY),
    Case("rotate a wider key", "POST", KEY + "/rotate", "keys_writer", {"key_id": "users_writer"}),
    Case(
        "rotate a covered key that outlives the caller",
        "POST",
        KEY + "/rotate",
        "child",
        {"key_id": "reader"},
    ),
    Case(
        "rotate a covered key of a higher tier",
        "POST",
        KEY + "/rotate",
        "keys_writer",
        {"key_id": "pro_reader"},
    ),
    Case(
        "raise a covered key's tier",
        "PATCH",
        KEY,
        "keys_writer",
        {"key_id": "reader"},
        {"tier": "enterprise"},
    ),
    Case(
        "give a covered key no expiry",
        "PATCH",
        KEY,
        "child",
        {"key_id": "reader"},
        {"expires_at": None},
    ),
    # -- keys: a key raising itself ----------------------------------------------------------
    Case("remove own expiry", "PATCH", KEY, "child", {"key_id": "child"}, {"expires_at": None}),
    Case("extend own expiry", "PATCH", KEY, "child", {"key_id": "child"}, {"expires_at": later(9)}),
    Case("raise own tier", "PATCH", KEY, "child", {"key_id": "child"}, {"tier": "pro"}),
    Case(
        "raise own limits",
        "PATCH",
        KEY,
        "child",
        {"key_id": "child"},
        {"rate_limits": {"minute": 10_000}},
    ),
    # -- users: a users:write key --------------------------------------------------------------
    Case(
        "key creates an admin",
        "POST",
        "/api/v1/users",
        "users_writer",
        body={"email": "a2@example.com", "password": PASSWORD, "role": "admin"},
    ),
    Case(
        "key creates an owner",
        "POST",
        "/api/v1/users",
        "users_writer",
        body={"email": "o2@example.com", "password": PASSWORD, "role": "owner"},
    ),
    Case(
        "key resets the owner's password",
        "PATCH",
        USER,
        "users_writer",
        OWNER_USER,
        {"password": NEW_PASSWORD},
    ),
    Case("key disables the owner", "PATCH", USER, "users_writer", OWNER_USER, {"disabled": True}),
    Case("key deletes the owner", "DELETE", USER, "users_writer", OWNER_USER),
    Case("key ends the owner's sessions", "DELETE", USER + "/sessions", "users_writer", OWNER_USER),
    # -- users: an admin user against the owner ---------------------------------------------
    Case(
        "admin resets the owner's password",
        "PATCH",
        USER,
        "admin_user",
        OWNER_USER,
        {"password": NEW_PASSWORD},
    ),
    Case("admin demotes the owner", "PATCH", USER, "admin_user", OWNER_USER, {"role": "member"}),
    Case("admin renames the owner", "PATCH", USER, "admin_user", OWNER_USER, {"name": "x"}),
    Case("admin disables the owner", "PATCH", USER, "admin_user", OWNER_USER, {"disabled": True}),
    Case("admin deletes the owner", "DELETE", USER, "admin_user", OWNER_USER),
    Case("admin ends the owner's sessions", "DELETE", USER + "/sessions", "admin_user", OWNER_USER),
    Case(
        "admin creates an owner",
        "POST",
        "/api/v1/users",
        "admin_user",
        body={"email": "o3@example.com", "password": PASSWORD, "role": "owner"},
    ),
    Case(
        "admin promotes itself",
        "PATCH",
        USER,
        "admin_user",
        {"user_id": "admin_user"},
        {"role": "owner"},
    ),
    # -- users: a member ---------------------------------------------------------------------
    Case("member renames the admin", "PATCH", USER, "member_user", {"user_id": "admin_user"}),
    Case(
        "member ends the owner's sessions", "DELETE", USER + "/sessions", "member_user", OWNER_USER
    ),
    # -- webhook secrets -----------------------------------------------------------------------
    Case("reveal without webhooks:secrets", "GET", ENDPOINT + "/secret", "webhooks_writer", EP),
    Case(
        "rotate without webhooks:secrets",
        "POST",
        ENDPOINT + "/secret/rotate",
        "webhooks_writer",
        EP,
    ),
    Case("member reveals", "GET", ENDPOINT + "/secret", "member_user", EP),
    Case("member rotates", "POST", ENDPOINT + "/secret/rotate", "member_user", EP),
]

# Reads a weaker principal may make: nothing changes, and nothing secret is in them.
READS = [
    Case("list keys", "GET", "/api/v1/keys", "keys_writer", expect=200, check=no_key_secret),
    Case("list the rate-limit tiers", "GET", "/api/v1/keys/tiers", "keys_writer", expect=200),
    Case(
        "get the owner key", "GET", KEY, "keys_writer", OWNER_KEY, expect=200, check=no_key_secret
    ),
    Case("list users", "GET", "/api/v1/users", "users_writer", expect=200, check=no_password),
    Case(
        "get the owner user", "GET", USER, "users_writer", OWNER_USER, expect=200, check=no_password
    ),
    Case(
        "list endpoints masked",
        "GET",
        "/api/v1/webhooks",
        "webhooks_writer",
        expect=200,
        check=masked,
    ),
    Case("get an endpoint masked", "GET", ENDPOINT, "member_user", EP, expect=200, check=masked),
]

# The same routes on targets the caller covers: allowed (so the refusals above are the rule's).
ALLOWED = [
    Case(
        "create a covered key",
        "POST",
        "/api/v1/keys",
        "keys_writer",
        body={"scopes": ["keys:read"]},
        expect=201,
    ),
    Case(
        "update a covered key",
        "PATCH",
        KEY,
        "keys_writer",
        {"key_id": "reader"},
        {"name": "r"},
        200,
    ),
    Case(
        "usage of a covered key",
        "GET",
        KEY + "/usage",
        "keys_writer",
        {"key_id": "reader"},
        expect=200,
    ),
    Case(
        "rotate a covered key",
        "POST",
        KEY + "/rotate",
        "keys_writer",
        {"key_id": "reader"},
        expect=200,
    ),
    Case(
        "shorten own expiry",
        "PATCH",
        KEY,
        "child",
        {"key_id": "child"},
        {"expires_at": later(0.5)},
        200,
    ),
    Case(
        "a child within its creator",
        "POST",
        "/api/v1/keys",
        "child",
        body={"scopes": ["keys:read"], "expires_at": later(0.25)},
        expect=201,
    ),
    Case(
        "owner renames the admin",
        "PATCH",
        USER,
        "owner_user",
        {"user_id": "admin_user"},
        {"name": "a"},
        200,
    ),
    Case(
        "admin ends a member's sessions",
        "DELETE",
        USER + "/sessions",
        "admin_user",
        {"user_id": "member_user"},
        expect=200,
    ),
    Case(
        "admin deletes a member",
        "DELETE",
        USER,
        "admin_user",
        {"user_id": "member_user"},
        expect=200,
    ),
    Case(
        "admin creates a member",
        "POST",
        "/api/v1/users",
        "admin_user",
        body={"email": "m2@example.com", "password": PASSWORD, "role": "member"},
        expect=201,
    ),
    Case("owner reveals", "GET", ENDPOINT + "/secret", "owner_user", EP, expect=200),
    Case("owner rotates", "POST", ENDPOINT + "/secret/rotate", "owner_user", EP, expect=200),
    Case(
        "revoke a covered key",
        "POST",
        KEY + "/revoke",
        "keys_writer",
        {"key_id": "reader"},
        expect=200,
    ),
    Case("delete a covered key", "DELETE", KEY, "child", {"key_id": "reader"}, expect=200),
]

MATRIX = REFUSED + READS + ALLOWED


def _with_body(case: Case) -> dict[str, Any] | None:
    if case.body is None and case.method in {"PATCH"}:
        return {"name": "changed"}
    if case.route == "/api/v1/keys" and case.body is not None:
        return {"name": case.name, **case.body}
    return case.body


async def call(world: World, case: Case) -> httpx.Response:
    return await world.h.client.request(
        case.method, case.path(world), json=_with_body(case), headers=world.headers(case.actor)
    )


async def test_weaker_principals_are_refused_and_nothing_changes(harness_factory: Any) -> None:
    harness = await harness_factory(webhook_allow_private=LOOPBACK)
    world = await build_world(harness)
    failures: list[str] = []
    for case in REFUSED + READS:
        before = await snapshot(harness)
        response = await call(world, case)
        after = await snapshot(harness)
        if response.status_code != case.expect:
            failures.append(f"{case.name}: {response.status_code} {response.text[:200]}")
            continue
        if case.expect == 403:
            assert response.headers["content-type"].startswith("application/problem+json")
        if case.check is not None:
            case.check(world, response)
        if before != after:
            changed = sorted(k for k in before if before[k] != after[k])
            failures.append(f"{case.name}: changed {changed}")
    assert not failures, "\n".join(failures)

    for case in ALLOWED:
        response = await call(world, case)
        assert response.status_code == case.expect, f"{case.name}: {response.text}"


async def test_refusals_say_nothing_of_the_target(harness_factory: Any) -> None:
    """One message for every refused act on a key, whatever the key holds."""
    world = await build_world(await harness_factory(webhook_allow_private=LOOPBACK))
    details = set()
    for target in ("owner_key", "users_writer", "webhooks_writer"):
        for method, suffix in (("POST", "/rotate"), ("POST", "/revoke"), ("GET", "/usage")):
            response = await world.h.client.request(
                method,
                f"/api/v1/keys/{world.ids[target]}{suffix}",
                headers=world.headers("keys_writer"),
            )
            assert response.status_code == 403, response.text
            details.add(response.json()["detail"])
            for scope in ("admin", "users:write", "webhooks:write"):
                assert scope not in response.text
    assert len(details) == 1


def test_every_route_is_in_the_matrix(tmp_path: Any) -> None:
    app = create_app(Settings(data_dir=tmp_path, secret_key="privilege-matrix-" + "k" * 32))
    routes = set()
    for context in iter_route_contexts(app.routes):
        original = context.original_route
        if not isinstance(original, APIRoute):
            continue
        path = context.path_format or ""
        for method in original.methods or ():
            if method == "HEAD":
                continue
            if (
                path.startswith(MATRIX_PREFIXES)
                or (path.startswith("/api/v1/webhooks") and "/secret" in path)
                or (method, path) in WEBHOOK_ROUTES
            ):
                routes.add((method, path))
    covered_refused = {(c.method, c.route) for c in REFUSED + READS}
    missing = sorted(routes - covered_refused)
    assert not missing, f"routes without a row in the privilege matrix: {missing}"
    assert routes >= WEBHOOK_ROUTES  # the enumeration found the routes it should
