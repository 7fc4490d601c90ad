"""Tenant isolation, for every list and get route of the app.

The GET routes under /api/v1 are read from the app itself; each must have an entry in
ROUTES (a new route without one fails the test), which says how it is checked:

- ``list``: tenant B's answer holds none of tenant A's objects (their ids and names), while
  A's own answer holds some of them (so the check can fail);
- ``item``: each path parameter is filled with the id of one of A's objects (see PARAMS):
  A gets 200, B gets 404;
- ``own``: an answer about the caller or the installation's catalog: B's holds none of A's
  objects;
- ``operator``: the operator's alone (``system:admin``): B gets 403 (see
  test_operator_routes.py for the rest).

RESOURCES is the table of how one object of each resource is made in tenant A (with A's
admin key, made through the tenants API; a plugin is installed by the operator and made
available to A alone). Tenant B is created afterwards, with its own admin key.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts

from conftest import Harness
from forecourt.app import create_app
from forecourt.settings import Settings

Check = Literal["list", "item", "own", "operator"]

ROUTES: dict[str, Check] = {
    "/api/v1/events": "list",
    "/api/v1/events/{event_id}": "item",
    "/api/v1/event-types": "list",
    "/api/v1/event-types/{name}": "item",
    "/api/v1/webhooks": "list",
    "/api/v1/webhooks/{endpoint_id}": "item",
    "/api/v1/webhooks/{endpoint_id}/secret": "item",
    "/api/v1/webhooks/{endpoint_id}/deliveries": "item",
    "/api/v1/webhooks/{endpoint_id}/stats": "item",
    "/api/v1/deliveries/{delivery_id}": "item",
    "/api/v1/keys": "list",
    "/api/v1/keys/{key_id}": "item",
    "/api/v1/keys/{key_id}/usage": "item",
    "/api/v1/keys/tiers": "own",  # the installation's tiers: no tenant's data
    "/api/v1/users": "list",
    "/api/v1/users/{user_id}": "item",
    "/api/v1/auth/me": "own",
    "/api/v1/stream": "own",  # B's stream (bounded by stream_max_duration_s) shows none of A's
    "/api/v1/audit-log": "list",
    "/api/v1/plugins": "list",
    "/api/v1/plugins/types": "own",
    "/api/v1/plugins/sandbox": "operator",
    "/api/v1/plugins/publisher-keys": "operator",
    "/api/v1/plugins/{plugin_id}": "item",
    "/api/v1/plugins/{plugin_id}/stats": "item",
    "/api/v1/plugins/{plugin_id}/executions": "item",
    "/api/v1/plugins/{plugin_id}/status": "item",
    "/api/v1/plugins/categories": "own",
    "/api/v1/plugins/{plugin_id}/availability": "operator",
    "/api/v1/plugin-instances": "list",
    "/api/v1/metrics": "list",
    "/api/v1/metrics/query": "list",
    "/api/v1/plugins/{plugin_id}/metrics": "item",
    "/api/v1/plugins/{plugin_id}/metrics/history": "item",
    "/api/v1/plugin-instances/{instance_id}": "item",
    "/api/v1/tenants": "operator",
    "/api/v1/tenants/{tenant}": "operator",
    "/api/v1/tenants/{tenant}/host-permissions": "operator",
    "/api/v1/stats/operations": "operator",
    "/api/v1/stats/operations/slow": "operator",
    "/api/v1/stats/summary": "own",
    "/api/v1/system/logs": "operator",
    "/api/v1/system/logs/stats": "operator",
    "/api/v1/alerts": "list",
    "/api/v1/alerts/summary": "own",
    "/api/v1/alerts/{alert_id}": "item",
    "/api/v1/alert-rules": "list",
    "/api/v1/alert-rules/{rule_id}": "item",
}

# Query parameters a route needs (beside ``limit`` for a list).
QUERY: dict[str, dict[str, str]] = {
    "/api/v1/stream": {"channels": "events,deliveries,alerts"},
    "/api/v1/metrics/query": {"name": "alphaonly.metric"},
    "/api/v1/plugins/{plugin_id}/metrics/history": {"metric_name": "alphaonly.metric"},
}

# Which of A's objects fills each path parameter (a key of Seeded.params).
PARAMS = {
    "event_id": "event",
    "name": "event_type",
    "endpoint_id": "endpoint",
    "delivery_id": "delivery",
    "key_id": "key",
    "user_id": "user",
    "plugin_id": "plugin",
    "instance_id": "instance",
    "tenant": "tenant",
    "alert_id": "alert",
    "rule_id": "alert_rule",
}

SETTINGS = {
    "plugin_allow_unsigned": True,
    "webhook_allow_private": "127.0.0.0/8",
    "stream_max_duration_s": 0.5,
}
EVENT_TYPE = "alphaonly.thing"
PLUGIN = "com.alphaonly.upper"
SHARED_PLUGIN = "forecourt.json-export"
MANIFEST = f"""
id = "{PLUGIN}"
name = "Alpha only"
version = "1.0.0"
type = "transformation"
entry_point = "plugin:run"
"""
CODE = "def run(payload):\n    return payload\n"


@dataclass
class Seeded:
    """Tenant A's objects: an id for each resource, and every string that marks them."""

    key: str
    params: dict[str, str] = field(default_factory=dict)
    markers: set[str] = field(default_factory=set)

    def add(self, resource: str, value: str, *more: str) -> None:
        self.params[resource] = value
        self.markers.update({value, *more})


async def ok(response: Awaitable[httpx.Response], status: int = 201) -> dict[str, Any]:
    done = await response
    assert done.status_code == status, done.text
    body: dict[str, Any] = done.json()
    return body


async def make_event_type(h: Harness, a: Seeded) -> None:
    await ok(h.client.post("/api/v1/event-types", json={"name": EVENT_TYPE}, headers=h.auth(a.key)))
    a.add("event_type", EVENT_TYPE)


async def make_endpoint(h: Harness, a: Seeded) -> None:
    body = {"url": "http://127.0.0.1:9/alpha-only-hook", "event_types": [EVENT_TYPE]}
    created = await ok(h.client.post("/api/v1/webhooks", json=body, headers=h.auth(a.key)))
    a.add("endpoint", created["id"], "alpha-only-hook")


async def make_event(h: Harness, a: Seeded) -> None:
    body = {"type": EVENT_TYPE, "data": {"n": 1}, "subject": "alpha-only-subject"}
    response = await h.client.post("/api/v1/events", json=body, headers=h.auth(a.key))
    assert response.status_code in (200, 201, 202), response.text
    published = response.json()
    a.add("event", published["id"], "alpha-only-subject")


async def make_delivery(h: Harness, a: Seeded) -> None:
    endpoint = a.params["endpoint"]
    found = await ok(
        h.client.get(f"/api/v1/webhooks/{endpoint}/deliveries", headers=h.auth(a.key)), 200
    )
    a.add("delivery", found["items"][0]["id"])


async def make_key(h: Harness, a: Seeded) -> None:
    body = {"name": "alpha-only-key", "scopes": ["events:read"]}
    created = await ok(h.client.post("/api/v1/keys", json=body, headers=h.auth(a.key)))
    a.add("key", created["id"], "alpha-only-key", created["prefix"])


async def make_user(h: Harness, a: Seeded) -> None:
    body = {"email": "ada@alpha-only.example", "password": "correct horse battery"}
    created = await ok(h.client.post("/api/v1/users", json=body, headers=h.auth(a.key)))
    a.add("user", created["id"], "ada@alpha-only.example")


async def make_plugin(h: Harness, a: Seeded) -> None:
    """Installed by the operator, available to A alone."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("forecourt-plugin.toml", MANIFEST)
        archive.writestr("plugin.py", CODE)
    package = {"package": ("plugin.zip", buffer.getvalue(), "application/zip")}
    await ok(h.client.post("/api/v1/plugins", files=package, headers=h.auth()))
    only_a = {"all_tenants": False, "tenants": [a.params["tenant"]]}
    await ok(
        h.client.put(f"/api/v1/plugins/{PLUGIN}/availability", json=only_a, headers=h.auth()),
        200,
    )
    a.add("plugin", PLUGIN)


async def make_instance(h: Harness, a: Seeded) -> None:
    """An instance of A's plugin and one of a built-in every tenant has, each run once."""
    for plugin_id, name, config, input in (
        (PLUGIN, "alpha-only-instance", {}, {"records": [{"w": "a"}]}),
        (SHARED_PLUGIN, "alpha-only-export", {}, {"records": [{"a": 1}], "format": "ndjson"}),
    ):
        body = {"plugin_id": plugin_id, "name": name, "config": config}
        made = await ok(h.client.post("/api/v1/plugin-instances", json=body, headers=h.auth(a.key)))
        run = await ok(
            h.client.post(
                f"/api/v1/plugin-instances/{made['id']}/execute",
                json={"input": input},
                headers=h.auth(a.key),
            ),
            200,
        )
        assert run["status"] == "ok", run
        a.markers.update({made["id"], name, run["id"]})
        if plugin_id == PLUGIN:
            a.params["instance"] = made["id"]


async def make_metric(h: Harness, a: Seeded) -> None:
    """A series; its name is echoed by a query, so its label value marks it."""
    point = {"name": "alphaonly.metric", "value": 1, "labels": {"owner": "alphaonly-series"}}
    body = {"points": [point]}
    await ok(h.client.post("/api/v1/metrics", json=body, headers=h.auth(a.key)), 202)
    await h.fc.metrics.flush()
    a.add("metric", "alphaonly-series")


async def make_alert(h: Harness, a: Seeded) -> None:
    body = {"type": "alpha.only", "severity": "low", "message": "alpha-only-alert"}
    created = await ok(h.client.post("/api/v1/alerts", json=body, headers=h.auth(a.key)))
    a.add("alert", created["id"], "alpha-only-alert", created["fingerprint"])


async def make_alert_rule(h: Harness, a: Seeded) -> None:
    body = {
        "name": "alpha-only-rule",
        "query": {"metric": "alpha.only.metric"},
        "condition": "absent",
    }
    created = await ok(h.client.post("/api/v1/alert-rules", json=body, headers=h.auth(a.key)))
    a.add("alert_rule", created["id"], "alpha-only-rule", "alpha.only.metric")


# In order: a resource may use those made before it.
RESOURCES: dict[str, Callable[[Harness, Seeded], Awaitable[None]]] = {
    "event_type": make_event_type,
    "endpoint": make_endpoint,
    "event": make_event,
    "delivery": make_delivery,
    "key": make_key,
    "user": make_user,
    "plugin": make_plugin,
    "instance": make_instance,
    "alert": make_alert,
    "alert_rule": make_alert_rule,
    "metric": make_metric,
}


def get_routes(app: FastAPI) -> list[str]:
    found = []
    for route in iter_route_contexts(app.routes):
        if isinstance(route.original_route, APIRoute) and "GET" in (route.methods or ()):
            path = route.path_format or ""
            if path.startswith("/api/v1/"):
                found.append(path)
    return found


@pytest.fixture(scope="module")
def routes(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    data: Path = tmp_path_factory.mktemp("isolation")
    return get_routes(create_app(Settings(data_dir=data, secret_key="iso-" + "k" * 32)))


def test_every_get_route_has_an_entry(routes: list[str]) -> None:
    missing = sorted(set(routes) - set(ROUTES))
    assert not missing, f"add these GET routes to ROUTES (and RESOURCES if needed): {missing}"
    stale = sorted(set(ROUTES) - set(routes))
    assert not stale, f"ROUTES lists routes the app no longer has: {stale}"
    for path, check in ROUTES.items():
        params = [p[1:-1] for p in path.split("/") if p.startswith("{")]
        if check == "item":
            assert params and all(p in PARAMS for p in params), path
        else:
            assert check == "operator" or not params, path


def fill(path: str, a: Seeded) -> str:
    for name, resource in PARAMS.items():
        path = path.replace("{" + name + "}", a.params.get(resource, "?"))
    return path


def leaked(body: str, a: Seeded) -> set[str]:
    return {marker for marker in a.markers if marker in body}


async def test_tenant_b_sees_nothing_of_tenant_a(harness_factory: Any, routes: list[str]) -> None:
    h: Harness = await harness_factory(**SETTINGS)
    alpha = await h.create_tenant("alpha", "A")
    a = Seeded(alpha["admin_key"])
    a.params["tenant"] = alpha["id"]
    for make in RESOURCES.values():
        await make(h, a)
    assert set(RESOURCES) <= set(a.params), "every resource made an object"
    beta = await h.create_tenant("beta", "B")
    b_key = beta["admin_key"]

    checked: dict[Check, int] = {"list": 0, "item": 0, "own": 0, "operator": 0}
    for path in routes:
        check = ROUTES[path]
        url = fill(path, a)
        params = {**({"limit": 200} if check == "list" else {}), **QUERY.get(path, {})}
        b = await h.client.get(url, params=params, headers=h.auth(b_key))
        if check == "operator":
            assert b.status_code == 403, (path, b.text)
        elif check == "item":
            mine = await h.client.get(url, params=params, headers=h.auth(a.key))
            assert mine.status_code == 200, (path, mine.text)
            assert b.status_code == 404, (path, b.status_code, b.text)
            # A 404 may name the id asked for, and nothing else of A's.
            extra = {m for m in leaked(b.text, a) if m not in url}
            assert not extra, (path, extra)
        else:
            assert b.status_code == 200, (path, b.text)
            assert not leaked(b.text, a), (path, leaked(b.text, a))
            if check == "list":
                mine = await h.client.get(url, params=params, headers=h.auth(a.key))
                assert leaked(mine.text, a), f"{path}: A's own list shows none of its objects"
        checked[check] += 1
    assert all(checked.values()), checked

    # A plugin both tenants have: B's runs and statistics hold none of A's.
    for suffix in ("executions", "stats"):
        url = f"/api/v1/plugins/{SHARED_PLUGIN}/{suffix}"
        b = await h.client.get(url, headers=h.auth(b_key))
        assert b.status_code == 200 and not leaked(b.text, a), (url, b.text)
        mine = await h.client.get(url, headers=h.auth(a.key))
        assert mine.status_code == 200
    stats = await h.client.get(f"/api/v1/plugins/{SHARED_PLUGIN}/stats", headers=h.auth(b_key))
    assert stats.json()["windows"]["7d"]["executions"] == 0
    # Instances are found by name too: A's names mean nothing to B.
    by_name = await h.client.get(
        "/api/v1/plugin-instances/alpha-only-instance", headers=h.auth(b_key)
    )
    assert by_name.status_code == 404
