"""The scope matrix: every route declares the one scope it needs, and enforces it.

The routes are found by enumerating the application (``/api/v1``, and ``/graphql`` and ``/ws``
when they exist), not from a hand-kept list; only the public ones, and those any signed-in
caller may use, are listed here. For every other route:

- it declares exactly one scope, through a ``forecourt.http.deps.require`` dependency;
- a key holding every scope but that one (and neither ``admin`` nor a scope that implies the
  missing one) gets 403, and a call without credentials (or with a key that does not exist)
  gets 401; both before the request's path, query or body are validated (the requests carry
  placeholder ids and an empty body, which validation would refuse with a 404 or a 422);
- a key holding that scope alone gets past the check (so the 403 is the scope's doing).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, APIWebSocketRoute, iter_route_contexts

from conftest import Harness
from forecourt.app import create_app
from forecourt.http import deps
from forecourt.scopes import ADMIN, ALL_SCOPES, expand

# Anyone may call these: sign-in, probes, the scrape endpoint.
PUBLIC = {
    ("POST", "/api/v1/auth/login"),
    ("POST", "/api/v1/auth/key"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
}
# Any signed-in caller, whatever its scopes: about itself only.
ANY_CALLER = {
    ("POST", "/api/v1/auth/logout"),
    ("GET", "/api/v1/auth/me"),
    # Each channel asked for needs its own scope (tests/streams).
    ("GET", "/api/v1/stream"),
}
# Authenticates during its handshake and checks each channel's scope (tests/streams).
SELF_AUTHENTICATED = {("WS", "/ws")}
GUARDED_PREFIXES = ("/api/v1", "/graphql", "/ws")
PLACEHOLDER_ID = "doesnotexist0"
BODY_METHODS = {"POST", "PUT", "PATCH"}
MANY = {"minute": 1_000_000}  # no rate limit gets in the way of the matrix


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    scopes: tuple[str, ...]  # what its ``require`` dependencies ask for
    caller: bool  # whether it needs a caller at all (``current_principal``)


def _walk(dependant: Dependant) -> Iterator[Any]:
    for sub in dependant.dependencies:
        yield sub.call
        yield from _walk(sub)


def _required(call: Any) -> str | None:
    """The scope a ``deps.require(scope)`` dependency checks, read from its closure."""
    name = getattr(call, "__name__", "")
    if not name.startswith("require_"):
        return None
    scope = inspect.getclosurevars(call).nonlocals.get("scope")
    assert isinstance(scope, str), f"{name} is not made by forecourt.http.deps.require"
    return scope


def operations(app: FastAPI) -> list[Operation]:
    found = []
    for route in iter_route_contexts(app.routes):
        original = route.original_route
        if not isinstance(original, (APIRoute, APIWebSocketRoute)):
            continue  # /openapi.json and the documentation pages
        path = route.path_format or ""
        calls = list(_walk(route.dependant))
        scopes = tuple(s for s in map(_required, calls) if s is not None)
        caller = bool(scopes) or deps.current_principal in calls
        methods = sorted(route.methods or ()) if isinstance(original, APIRoute) else ["WS"]
        found += [Operation(m, path, scopes, caller) for m in methods]
    return found


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    from forecourt.settings import Settings

    data = tmp_path_factory.mktemp("scope-matrix")
    return create_app(Settings(data_dir=data, secret_key="scope-matrix-" + "k" * 32))


@pytest.fixture(scope="module")
def app_operations(app: FastAPI) -> list[Operation]:
    found = operations(app)
    # Every test below loops over these: an enumeration that found nothing would pass them all.
    assert len(guarded(found)) >= 60, "the enumeration did not find the API"
    return found


def guarded(all_operations: list[Operation]) -> list[Operation]:
    return [
        op
        for op in all_operations
        if (op.method, op.path) not in PUBLIC | ANY_CALLER | SELF_AUTHENTICATED
        and op.path.startswith(GUARDED_PREFIXES)
    ]


def without(scope: str) -> list[str]:
    """Every scope but ``scope``, ``admin`` and whatever would grant ``scope`` anyway."""
    return sorted(s for s in ALL_SCOPES - {ADMIN, scope} if scope not in expand({s}))


def _fill(path: str) -> str:
    parts = []
    for part in path.split("/"):
        parts.append(PLACEHOLDER_ID if part.startswith("{") and part.endswith("}") else part)
    return "/".join(parts)


async def call(h: Harness, op: Operation, key: str | None) -> httpx.Response:
    headers = {} if key is None else h.auth(key)
    body = {} if op.method in BODY_METHODS else None
    return await h.client.request(op.method, _fill(op.path), json=body, headers=headers)


# -- what the application declares ----------------------------------------------------------


def test_every_route_declares_exactly_one_scope(app_operations: list[Operation]) -> None:
    seen = {(op.method, op.path) for op in app_operations}
    assert seen >= PUBLIC, f"listed as public but gone: {PUBLIC - seen}"
    assert seen >= ANY_CALLER, f"listed as open to any caller but gone: {ANY_CALLER - seen}"
    undeclared = []
    for op in app_operations:
        where = (op.method, op.path)
        if where in SELF_AUTHENTICATED:
            continue
        if where in PUBLIC:
            assert not op.caller, f"{where} is listed as public but needs a caller"
        elif where in ANY_CALLER:
            assert op.caller and not op.scopes, f"{where} asks for {op.scopes}"
        elif not op.path.startswith(GUARDED_PREFIXES):
            undeclared.append(where)  # outside /api/v1 only the listed public routes
        elif len(op.scopes) != 1:
            undeclared.append(where)
        else:
            assert op.scopes[0] in ALL_SCOPES, f"{where} asks for an unknown scope"
    assert undeclared == [], "routes that do not declare exactly one scope"
    assert len(guarded(app_operations)) >= 60  # the enumeration did find the API


def test_the_openapi_document_says_which_operations_need_a_key(
    app: FastAPI, app_operations: list[Operation]
) -> None:
    documented = {
        (method.upper(), path): operation
        for path, item in app.openapi()["paths"].items()
        for method, operation in item.items()
        if method in {"get", "post", "put", "patch", "delete"}
    }
    for op in app_operations:
        if op.method == "WS" or (op.method, op.path) not in documented:
            continue
        secured = bool(documented[(op.method, op.path)].get("security"))
        assert secured == op.caller, (op.method, op.path)
    served = {(op.method, op.path) for op in guarded(app_operations)}
    assert served <= set(documented), "guarded operations missing from the document"


def test_a_scope_less_key_leaves_no_scope_behind() -> None:
    # The key of each row holds a lot: check the helper does not hand out the missing scope.
    for scope in ALL_SCOPES:
        assert scope not in expand(without(scope))
        assert ADMIN not in without(scope)
    assert "webhooks:write" not in without("webhooks:read")  # write implies read


# -- what it enforces ------------------------------------------------------------------------


async def _matrix_harness(harness_factory: Any) -> Harness:
    h: Harness = await harness_factory(ip_rate_limit=MANY, default_tier="enterprise")
    return h


async def _key_per_scope(
    h: Harness, ops: list[Operation], grant: Callable[[str], list[str]]
) -> dict[str, str]:
    """One key per scope the operations need, holding ``grant(scope)``."""
    keys: dict[str, str] = {}
    for op in ops:
        [scope] = op.scopes
        if scope not in keys:
            keys[scope] = (await h.create_key(grant(scope), tier="enterprise"))["key"]
    return keys


async def test_without_credentials_every_guarded_route_answers_401(
    harness_factory: Any, app_operations: list[Operation]
) -> None:
    h = await _matrix_harness(harness_factory)
    wrong = []
    for op in guarded(app_operations) + [
        o for o in app_operations if (o.method, o.path) in ANY_CALLER
    ]:
        if op.method == "WS":
            continue
        for key in (None, "fck_live_" + "0" * 40):
            response = await call(h, op, key)
            if response.status_code != 401 or not response.headers["content-type"].startswith(
                "application/problem+json"
            ):
                wrong.append((op.method, op.path, key is not None, response.status_code))
    assert wrong == []


async def test_a_key_with_every_scope_but_the_one_needed_answers_403(
    harness_factory: Any, app_operations: list[Operation]
) -> None:
    h = await _matrix_harness(harness_factory)
    ops = [op for op in guarded(app_operations) if op.method != "WS"]
    keys = await _key_per_scope(h, ops, without)
    wrong = []
    for op in ops:
        [scope] = op.scopes
        response = await call(h, op, keys[scope])
        problem = response.json() if response.status_code == 403 else {}
        if response.status_code != 403 or problem.get("required_scope", scope) != scope:
            wrong.append((op.method, op.path, scope, response.status_code, response.text[:200]))
    assert wrong == []


async def test_a_key_with_only_the_scope_needed_gets_past_the_check(
    harness_factory: Any, app_operations: list[Operation]
) -> None:
    h = await _matrix_harness(harness_factory)
    ops = [op for op in guarded(app_operations) if op.method != "WS"]
    keys = await _key_per_scope(h, ops, lambda scope: [scope])
    refused = []
    for op in ops:
        [scope] = op.scopes
        response = await call(h, op, keys[scope])
        if response.status_code in (401, 403) or response.status_code >= 500:
            refused.append((op.method, op.path, scope, response.status_code, response.text[:200]))
    assert refused == []


async def test_a_body_that_is_not_json_is_not_parsed_before_the_caller_is_known(
    harness_factory: Any, app_operations: list[Operation]
) -> None:
    h = await _matrix_harness(harness_factory)
    wrong = []
    for op in guarded(app_operations):
        if op.method not in BODY_METHODS:
            continue
        for body in (b"{", b"[" * 5000):
            response = await h.client.request(
                op.method,
                _fill(op.path),
                content=body,
                headers={"Content-Type": "application/json"},
            )
            if response.status_code != 401:
                wrong.append((op.method, op.path, body[:3], response.status_code))
    assert wrong == []
