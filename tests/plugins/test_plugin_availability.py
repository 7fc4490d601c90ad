"""Plugins per tenant: the operator makes a plugin available to every tenant or to a list; a
tenant's admin enables or disables it for that tenant alone; a built-in's first instance in
one tenant changes nothing for another; permissions that reach the host need the operator's
approval per tenant; every package change is in each affected tenant's log, by "operator"."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from plugin_support import files, install, start

from conftest import Harness, problem

UPPER = "com.example.upper"


@pytest.fixture
async def h(harness_factory: Any) -> Harness:
    return await start(harness_factory)


async def new_tenant(h: Harness, slug: str) -> str:
    """A tenant made through the API: its first admin key."""
    key: str = (await h.create_tenant(slug))["admin_key"]
    return key


async def plugins(h: Harness, key: str | None = None, **params: Any) -> dict[str, dict[str, Any]]:
    response = await h.client.get(
        "/api/v1/plugins", params={"limit": 200, **params}, headers=h.auth(key)
    )
    assert response.status_code == 200, response.text
    return {p["id"]: p for p in response.json()["items"]}


async def new_instance(
    h: Harness, key: str | None, plugin_id: str, name: str, **fields: Any
) -> httpx.Response:
    return await h.client.post(
        "/api/v1/plugin-instances",
        json={"plugin_id": plugin_id, "name": name, **fields},
        headers=h.auth(key),
    )


async def run(h: Harness, key: str | None, instance_id: str, input: Any) -> httpx.Response:
    return await h.client.post(
        f"/api/v1/plugin-instances/{instance_id}/execute",
        json={"input": input},
        headers=h.auth(key),
    )


async def log(h: Harness, key: str | None, action: str) -> list[dict[str, Any]]:
    response = await h.client.get(
        "/api/v1/audit-log", params={"action": action}, headers=h.auth(key)
    )
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def test_availability_to_all_or_a_list(h: Harness) -> None:
    beta = await new_tenant(h, "beta")
    gamma = await new_tenant(h, "gamma")
    await install(h, files())
    assert UPPER in await plugins(h, beta)
    made = await new_instance(h, beta, UPPER, "mine")
    assert made.status_code == 201, made.text
    ok = await run(h, beta, made.json()["id"], {"records": [{"w": "a"}]})
    assert ok.json()["status"] == "ok", ok.text

    # Only gamma (and the operator's own tenant) from now on.
    listed = await h.client.put(
        f"/api/v1/plugins/{UPPER}/availability",
        json={"all_tenants": False, "tenants": ["gamma", "default"]},
        headers=h.auth(),
    )
    assert listed.status_code == 200, listed.text
    assert listed.json() == {
        "plugin_id": UPPER,
        "all_tenants": False,
        "tenants": ["default", "gamma"],
    }
    got = await h.client.get(f"/api/v1/plugins/{UPPER}/availability", headers=h.auth())
    assert got.json() == listed.json()
    assert UPPER not in await plugins(h, beta)
    assert UPPER in await plugins(h, gamma)
    problem(await h.client.get(f"/api/v1/plugins/{UPPER}", headers=h.auth(beta)), 404, "not-found")
    refused = await new_instance(h, beta, UPPER, "again")
    problem(refused, 422, "invalid-input")
    # Beta's instance stopped with it (events and schedules skip disabled instances).
    mine = await h.client.get(f"/api/v1/plugin-instances/{made.json()['id']}", headers=h.auth(beta))
    assert mine.json()["enabled"] is False
    problem(await run(h, beta, made.json()["id"], {"records": []}), 409, "conflict")
    enable = await h.client.patch(
        f"/api/v1/plugin-instances/{made.json()['id']}",
        json={"enabled": True},
        headers=h.auth(beta),
    )
    problem(enable, 409, "conflict")
    made_gamma = await new_instance(h, gamma, UPPER, "theirs")
    assert made_gamma.status_code == 201, made_gamma.text

    # Beta and gamma each find the change in their own log, by "operator".
    for key, available in ((beta, False), (gamma, True)):
        [entry] = await log(h, key, "plugin.availability_changed")
        assert entry["actor_type"] == "operator" and entry["actor_id"] is None
        assert entry["after"] == {"available": available}
    [disabled] = await log(h, beta, "plugin_instance.disabled")
    assert disabled["actor_type"] == "operator" and disabled["target_id"] == made.json()["id"]

    # Unknown tenants and contradictory bodies change nothing.
    for body in (
        {"all_tenants": False, "tenants": ["nobody"]},
        {"all_tenants": True, "tenants": ["gamma"]},
    ):
        bad = await h.client.put(
            f"/api/v1/plugins/{UPPER}/availability", json=body, headers=h.auth()
        )
        found = problem(bad, 422, "invalid-input")
        if body["tenants"] == ["nobody"]:
            assert [e["field"] for e in found["errors"]] == ["tenants.0"]
    again = await h.client.get(f"/api/v1/plugins/{UPPER}/availability", headers=h.auth())
    assert again.json() == listed.json()

    everyone = await h.client.put(
        f"/api/v1/plugins/{UPPER}/availability", json={"all_tenants": True}, headers=h.auth()
    )
    assert everyone.json()["all_tenants"] is True
    assert UPPER in await plugins(h, beta)


async def test_a_tenant_admin_enables_and_disables_for_its_own_tenant_only(h: Harness) -> None:
    beta = await new_tenant(h, "beta")
    await install(h, files())
    ours = await new_instance(h, None, UPPER, "ours")
    theirs = await new_instance(h, beta, UPPER, "theirs")
    off = await h.client.patch(
        f"/api/v1/plugins/{UPPER}", json={"enabled": False}, headers=h.auth(beta)
    )
    assert off.status_code == 200 and off.json()["enabled"] is False
    assert (await plugins(h, beta))[UPPER]["enabled"] is False
    assert (await plugins(h))[UPPER]["enabled"] is True
    assert UPPER in await plugins(h, beta, enabled="false")
    assert UPPER in await plugins(h, enabled="true")
    problem(await run(h, beta, theirs.json()["id"], {"records": []}), 409, "conflict")
    fine = await run(h, None, ours.json()["id"], {"records": [{"w": "x"}]})
    assert fine.json()["status"] == "ok"
    # Its own log only; the default tenant's log says nothing of it.
    [entry] = await log(h, beta, "plugin.disabled")
    assert entry["actor_type"] == "key"
    assert await log(h, None, "plugin.disabled") == []
    later = await new_instance(h, beta, UPPER, "later")
    assert later.status_code == 201 and later.json()["enabled"] is False
    # Enabling an instance while the plugin is off for the tenant is refused.
    problem(
        await h.client.patch(
            f"/api/v1/plugin-instances/{theirs.json()['id']}",
            json={"enabled": True},
            headers=h.auth(beta),
        ),
        409,
        "conflict",
    )
    # A tenant admin cannot reach the installation's switches.
    for method, path in (
        ("DELETE", f"/api/v1/plugins/{UPPER}"),
        ("PUT", f"/api/v1/plugins/{UPPER}/availability"),
    ):
        refused = await h.client.request(
            method, path, json={"all_tenants": False}, headers=h.auth(beta)
        )
        problem(refused, 403, "forbidden")
    on = await h.client.patch(
        f"/api/v1/plugins/{UPPER}", json={"enabled": True}, headers=h.auth(beta)
    )
    assert on.json()["enabled"] is True
    # The instances the switch turned off (made before it, or while it was off) are on again.
    for made in (theirs, later):
        got = await h.client.get(
            f"/api/v1/plugin-instances/{made.json()['id']}", headers=h.auth(beta)
        )
        assert got.json()["enabled"] is True
    fine = await run(h, beta, later.json()["id"], {"records": [{"w": "y"}]})
    assert fine.json()["status"] == "ok"


async def test_a_builtins_first_instance_in_one_tenant_changes_nothing_for_another(
    h: Harness,
) -> None:
    beta = await new_tenant(h, "beta")
    export = "forecourt.json-export"
    made = await new_instance(h, beta, export, "export", config={})
    assert made.status_code == 201, made.text
    assert (await plugins(h, beta))[export]["enabled"] is True
    ours = (await plugins(h))[export]
    assert (ours["enabled"], ours["disabled_reason"]) == (False, "not in use yet")
    [entry] = await log(h, beta, "plugin.enabled")
    assert entry["after"]["plugin_id"] == export
    ours_log = await log(h, None, "plugin.enabled")
    assert [e for e in ours_log if e["after"]["plugin_id"] == export] == []


async def test_a_taken_name_on_a_builtin_without_instances_is_409(h: Harness) -> None:
    await install(h, files())
    first = await new_instance(h, None, UPPER, "dup")
    assert first.status_code == 201
    again = await new_instance(h, None, "forecourt.csv-export", "dup", config={})
    problem(again, 409, "conflict")
    # Nothing was half-done: the built-in still waits for a first instance here.
    assert (await plugins(h))["forecourt.csv-export"]["enabled"] is False


async def test_host_permissions_need_the_operators_approval_per_tenant(h: Harness) -> None:
    beta = await new_tenant(h, "beta")
    monitor = "forecourt.docker-monitor"  # unix_sockets
    system_info = "forecourt.system-info"  # host_metrics
    for plugin_id in (monitor, system_info):
        refused = await new_instance(h, beta, plugin_id, plugin_id, config={})
        body = problem(refused, 403, "host-permission-not-approved")
        assert body["permissions"] and "operator" in body["detail"]
    listed = await h.client.get("/api/v1/tenants/beta/host-permissions", headers=h.auth())
    assert listed.json() == {"tenant": "beta", "approved": []}
    own = await h.client.get("/api/v1/tenants/default/host-permissions", headers=h.auth())
    assert own.json()["approved"] == ["host_metrics", "unix_sockets"]
    # A tenant admin cannot approve it for itself.
    problem(
        await h.client.put(
            "/api/v1/tenants/beta/host-permissions/unix_sockets", headers=h.auth(beta)
        ),
        403,
        "forbidden",
    )
    bad = await h.client.put("/api/v1/tenants/beta/host-permissions/root", headers=h.auth())
    assert bad.status_code == 422

    approved = await h.client.put(
        "/api/v1/tenants/beta/host-permissions/unix_sockets", headers=h.auth()
    )
    assert approved.json() == {"tenant": "beta", "approved": ["unix_sockets"]}
    made = await new_instance(h, beta, monitor, "docker", config={})
    assert made.status_code == 201, made.text
    problem(
        await new_instance(h, beta, system_info, "info", config={}),
        403,
        "host-permission-not-approved",
    )
    [entry] = await log(h, beta, "host_permission.approved")
    assert entry["actor_type"] == "operator"

    revoked = await h.client.delete(
        "/api/v1/tenants/beta/host-permissions/unix_sockets", headers=h.auth()
    )
    assert revoked.json()["approved"] == []
    stopped = await h.client.get(
        f"/api/v1/plugin-instances/{made.json()['id']}", headers=h.auth(beta)
    )
    assert stopped.json()["enabled"] is False
    problem(
        await run(h, beta, made.json()["id"], {"interval_s": 30}),
        403,
        "host-permission-not-approved",
    )


async def test_package_changes_are_in_every_affected_tenants_log(h: Harness) -> None:
    beta = await new_tenant(h, "beta")
    await install(h, files())
    await install(h, files(version="1.1.0"))
    theirs = await new_instance(h, beta, UPPER, "theirs")
    assert theirs.status_code == 201
    gone = await h.client.delete(
        f"/api/v1/plugins/{UPPER}", params={"force": "true"}, headers=h.auth()
    )
    assert gone.status_code == 204, gone.text
    installed = await log(h, beta, "plugin.installed")
    assert [e["after"]["version"] for e in installed] == ["1.1.0", "1.0.0"]
    uninstalled = await log(h, beta, "plugin.uninstalled")
    assert len(uninstalled) == 2
    for entry in installed + uninstalled:
        assert entry["actor_type"] == "operator" and entry["actor_id"] is None
        assert entry["ip"] is None
    # The operator's own log names the operator's key, once per change.
    own = [e for e in await log(h, None, "plugin.installed") if e["after"]["plugin_id"] == UPPER]
    assert [e["actor_type"] for e in own] == ["key", "key"]
    assert None not in {e["actor_id"] for e in own}
    missing = await h.client.get(
        f"/api/v1/plugin-instances/{theirs.json()['id']}", headers=h.auth(beta)
    )
    assert missing.status_code == 404
