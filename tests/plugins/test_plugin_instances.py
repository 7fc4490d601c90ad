"""/api/v1/plugin-instances: configuration checked and its secrets sealed, runs in the real
sandbox with their record and events, upgrades that re-check the configuration."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
from plugin_support import (
    UPPER,
    events,
    execute,
    executions,
    files,
    install,
    instance,
    start,
)
from sqlalchemy import select

import unix_http
from conftest import Harness
from forecourt.plugins.models import PluginInstance

SECRET = "xoxb-very-secret-token"


@pytest.fixture
async def h(harness_factory: Any) -> Harness:
    harness = await start(harness_factory)
    await install(harness, files())
    return harness


def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    return body


async def test_a_bad_configuration_is_422_naming_the_field(h: Harness) -> None:
    response = await h.client.post(
        "/api/v1/plugin-instances",
        json={"plugin_id": "com.example.upper", "name": "u", "config": {"suffix": "too long"}},
        headers=h.auth(),
    )
    body = problem(response, 422)
    assert body["errors"][0]["field"] == "config.suffix"
    unknown = await h.client.post(
        "/api/v1/plugin-instances",
        json={"plugin_id": "com.example.upper", "name": "u", "config": {"colour": "red"}},
        headers=h.auth(),
    )
    assert problem(unknown, 422)["errors"][0]["field"] == "config.colour"
    no_plugin = await h.client.post(
        "/api/v1/plugin-instances",
        json={"plugin_id": "com.example.none", "name": "u"},
        headers=h.auth(),
    )
    assert problem(no_plugin, 422)["errors"][0]["field"] == "plugin_id"
    filtered = await h.client.post(
        "/api/v1/plugin-instances",
        json={"plugin_id": "com.example.upper", "name": "u", "event_types": ["alert.*"]},
        headers=h.auth(),
    )
    assert problem(filtered, 422)["errors"][0]["field"] == "event_types"
    listing = await h.client.get("/api/v1/plugin-instances", headers=h.auth())
    assert [i["name"] for i in listing.json()["items"]] == ["system-info"]  # nothing made
    await instance(h, name="taken")
    twice = await h.client.post(
        "/api/v1/plugin-instances",
        json={"plugin_id": "com.example.upper", "name": "taken"},
        headers=h.auth(),
    )
    problem(twice, 409)


async def test_secrets_are_masked_in_every_response_and_encrypted_at_rest(h: Harness) -> None:
    await install(h, files(version="1.1.0", entry_point="plugin:secret"))
    created = await instance(h, version="1.1.0", config={"token": SECRET, "suffix": "!"})
    assert created["config"] == {"token": "********", "suffix": "!"}
    got = await h.client.get(f"/api/v1/plugin-instances/{created['id']}", headers=h.auth())
    listed = await h.client.get("/api/v1/plugin-instances", headers=h.auth())
    changed = await h.client.patch(
        f"/api/v1/plugin-instances/{created['id']}",
        json={"config": {"token": "********", "suffix": "?"}},  # the mask keeps the secret
        headers=h.auth(),
    )
    assert changed.status_code == 200
    audit = await h.client.get(
        "/api/v1/audit-log", params={"target_id": created["id"]}, headers=h.auth()
    )
    for response in (got, listed, changed, audit):
        assert SECRET not in response.text
    assert changed.json()["config"] == {"token": "********", "suffix": "?"}

    async with h.fc.sessionmaker() as session:
        row = await session.scalar(select(PluginInstance).where(PluginInstance.id == created["id"]))
    assert row is not None
    assert row.config["suffix"] == "?"
    assert row.config["token"].startswith("v1.") and SECRET not in json.dumps(row.config)

    # The plugin itself gets the secret, decrypted, inside the sandbox.
    result = await execute(h, created["id"], {"records": []})
    assert result["output"] == {"records": [{"token": SECRET}]}
    assert SECRET not in json.dumps(await executions(h, "com.example.upper"))


async def test_execute_a_transformation(h: Harness) -> None:
    created = await instance(h, config={"suffix": "!"})
    began = time.monotonic()
    result = await execute(h, created["id"], {"records": [{"name": "ada", "n": 1}]})
    window_ms = (time.monotonic() - began) * 1000
    assert result["status"] == "ok", result
    assert result["output"] == {"records": [{"name": "ADA!", "n": 1}]}
    assert "upper-casing 1 records" in result["logs"]
    assert result["trigger"] == "api" and result["instance_id"] == created["id"]
    assert 0 < result["duration_ms"] <= window_ms + 1  # milliseconds, inside the request
    assert result["max_rss_kib"] > 0 and result["cpu_ms"] is not None
    assert result["error_class"] is None
    [recorded] = await executions(h, "com.example.upper")
    assert recorded["id"] == result["id"] and recorded["status"] == "ok"
    [completed] = await events(h, "plugin.execution_completed")
    assert completed["data"]["execution_id"] == result["id"]
    assert completed["source"].endswith(f"/plugin-instances/{created['id']}")
    got = await h.client.get(f"/api/v1/plugin-instances/{created['id']}", headers=h.auth())
    assert got.json()["last_status"] == "ok"

    bad_input = await h.client.post(
        f"/api/v1/plugin-instances/{created['id']}/execute",
        json={"input": {"rows": []}},
        headers=h.auth(),
    )
    assert problem(bad_input, 422)["errors"][0]["field"] == "input.records"
    assert len(await executions(h, "com.example.upper")) == 1  # refused before running


async def test_a_plugin_that_raises_is_recorded_and_announced(h: Harness) -> None:
    await install(h, files(version="2.0.0", entry_point="plugin:boom"))
    await install(h, files(version="3.0.0", entry_point="plugin:bad_output"))
    broken = await instance(h, name="boom", version="2.0.0")
    result = await execute(h, broken["id"], {"records": [{"a": "b"}]})
    assert result["status"] == "error" and result["output"] is None
    assert result["error_class"] == "ValueError"
    assert result["error_message"] == "the plugin broke on purpose"
    assert "Traceback" in result["logs"]
    [failed] = await events(h, "plugin.failed")
    assert failed["severity"] == "error"
    assert failed["data"]["execution_id"] == result["id"]
    assert failed["data"]["error_class"] == "ValueError"

    wrong = await instance(h, name="wrong", version="3.0.0")
    broke_contract = await execute(h, wrong["id"], {"records": []})
    assert broke_contract["status"] == "error"
    assert broke_contract["error_class"] == "ContractViolation"
    assert "output.records" in broke_contract["error_message"]
    statuses = [e["status"] for e in await executions(h, "com.example.upper")]
    assert statuses == ["error", "error"]


async def test_disabled_plugins_and_instances_do_not_run(h: Harness) -> None:
    created = await instance(h)
    off = await h.client.patch(
        "/api/v1/plugins/com.example.upper", json={"enabled": False}, headers=h.auth()
    )
    assert off.status_code == 200 and off.json()["enabled"] is False
    run = await h.client.post(
        f"/api/v1/plugin-instances/{created['id']}/execute",
        json={"input": {"records": []}},
        headers=h.auth(),
    )
    problem(run, 409)
    await h.client.patch(
        "/api/v1/plugins/com.example.upper", json={"enabled": True}, headers=h.auth()
    )
    await h.client.patch(
        f"/api/v1/plugin-instances/{created['id']}", json={"enabled": False}, headers=h.auth()
    )
    again = await h.client.post(
        f"/api/v1/plugin-instances/{created['id']}/execute",
        json={"input": {"records": []}},
        headers=h.auth(),
    )
    problem(again, 409)
    deleted = await h.client.delete(f"/api/v1/plugin-instances/{created['id']}", headers=h.auth())
    assert deleted.status_code == 204
    missing = await h.client.get(f"/api/v1/plugin-instances/{created['id']}", headers=h.auth())
    problem(missing, 404)


async def test_upgrading_checks_the_configuration_against_the_new_schema(h: Harness) -> None:
    strict = {
        "type": "object",
        "required": ["suffix"],
        "properties": {"suffix": {"type": "string", "enum": ["!", "?"]}},
    }
    await install(h, files(version="2.0.0", config_schema=strict))
    created = await instance(h, version="1.0.0", config={"suffix": "~"})
    refused = await h.client.patch(
        "/api/v1/plugins/com.example.upper", json={"upgrade_to": "2.0.0"}, headers=h.auth()
    )
    body = problem(refused, 422)
    assert body["errors"][0]["field"] == f"instances.{created['id']}.config.suffix"
    got = await h.client.get(f"/api/v1/plugin-instances/{created['id']}", headers=h.auth())
    assert got.json()["version"] == "1.0.0"  # all or nothing

    direct = await h.client.patch(
        f"/api/v1/plugin-instances/{created['id']}", json={"version": "2.0.0"}, headers=h.auth()
    )
    assert problem(direct, 422)["errors"][0]["field"] == "config.suffix"
    fixed = await h.client.patch(
        f"/api/v1/plugin-instances/{created['id']}",
        json={"config": {"suffix": "!"}},
        headers=h.auth(),
    )
    assert fixed.status_code == 200
    upgraded = await h.client.patch(
        "/api/v1/plugins/com.example.upper", json={"upgrade_to": "2.0.0"}, headers=h.auth()
    )
    assert upgraded.status_code == 200, upgraded.text
    assert upgraded.json()["upgraded_instances"] == [created["id"]]
    result = await execute(h, created["id"], {"records": [{"w": "v"}]})
    assert result["version"] == "2.0.0" and result["output"] == {"records": [{"w": "V!"}]}
    unknown = await h.client.patch(
        "/api/v1/plugins/com.example.upper", json={"upgrade_to": "9.9.9"}, headers=h.auth()
    )
    assert problem(unknown, 422)["errors"][0]["field"] == "upgrade_to"


async def test_a_hooks_follow_up_events_are_published(h: Harness) -> None:
    code = (
        UPPER
        + """

def react(payload):
    forecourt_plugin.emit("dashboard.viewed", {"by": "hook"}, subject="d1")
    forecourt_plugin.emit("key.revoked", {"forged": True})
    return {"events": [
        {"type": "export.completed", "data": {"file": "x.csv"}},
        {"type": "no.such_type", "data": {}},
    ]}
"""
    )
    hook = files(
        code,
        id="com.example.hook",
        type="hook",
        entry_point="plugin:react",
        permissions={"events": ["alert.*"]},
        config_schema=None,
    )
    await install(h, hook)
    created = await instance(h, plugin_id="com.example.hook", name="hook")
    envelope = {"specversion": "1.0", "id": "e1", "source": "/t", "type": "alert.triggered"}
    result = await execute(h, created["id"], {"event": envelope})
    assert result["status"] == "ok", result
    [viewed] = await events(h, "dashboard.viewed")
    assert viewed["data"] == {"by": "hook"} and viewed["subject"] == "d1"
    assert viewed["source"].endswith(f"/plugin-instances/{created['id']}")
    assert [e["data"] for e in await events(h, "export.completed")] == [{"file": "x.csv"}]
    assert await events(h, "key.revoked") == []  # Forecourt's own types cannot be forged
    assert "'key.revoked' dropped" in result["logs"]
    assert "'no.such_type' dropped" in result["logs"]


async def test_a_builtins_first_instance_enables_it(h: Harness) -> None:
    before = await h.client.get("/api/v1/plugins/forecourt.json-export", headers=h.auth())
    assert before.json()["enabled"] is False
    created = await instance(h, plugin_id="forecourt.json-export", name="json", config={})
    after = await h.client.get("/api/v1/plugins/forecourt.json-export", headers=h.auth())
    assert after.json()["enabled"] is True and after.json()["trust"] == "builtin"
    result = await execute(h, created["id"], {"records": [{"a": 1}], "format": "ndjson"})
    assert result["status"] == "ok", result
    assert result["output"]["content"] == '{"a": 1}\n' or result["output"]["content"].startswith(
        '{"a":'
    )


ENGINE_CLIENT = """
import json
import socket

SOCKET = {socket!r}


def collect(payload):
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(SOCKET)
        sock.sendall(b"GET /info HTTP/1.0\\r\\n\\r\\n")
        answer = b"".join(iter(lambda: sock.recv(65536), b""))
    info = json.loads(answer.partition(b"\\r\\n\\r\\n")[2])
    return {{"metrics": [{{"name": "engine.images", "value": info["Images"]}}]}}
"""


@pytest.fixture
def engine_socket() -> Iterator[str]:
    """A Unix socket answering GET /info with {"Images": 4}, as a Docker engine would."""
    with unix_http.serve({"/info": {"Images": 4}}, mode=0o666) as path:
        yield path


async def test_a_plugin_reaches_the_unix_sockets_its_manifest_declares(
    h: Harness, engine_socket: str
) -> None:
    permissions = {
        "schedule_interval_s": 60,
        "metrics": ["engine.images"],
        "unix_sockets": [engine_socket],
    }
    common = {"type": "collector", "entry_point": "plugin:collect", "config_schema": {}}
    code = ENGINE_CLIENT.format(socket=engine_socket)
    installed = await install(
        h, files(code, id="com.example.engine", permissions=permissions, **common)
    )
    assert installed["permissions"]["unix_sockets"] == [engine_socket]  # what the admin sees
    await install(
        h,
        files(
            code,
            id="com.example.blind",
            permissions={**permissions, "unix_sockets": []},
            **common,
        ),
    )
    declared = await instance(h, plugin_id="com.example.engine", name="engine")
    undeclared = await instance(h, plugin_id="com.example.blind", name="blind")
    result = await execute(h, declared["id"], {"interval_s": 60})
    assert result["status"] == "ok", result
    assert result["metrics"] == [{"name": "engine.images", "value": 4}]
    blind = await execute(h, undeclared["id"], {"interval_s": 60})
    assert (blind["status"], blind["error_class"]) == ("error", "FileNotFoundError")


@pytest.mark.skipif(
    os.path.exists("/var/run/docker.sock"), reason="a Docker engine runs on this host"
)
async def test_docker_monitor_without_an_engine_reports_it_unreachable(h: Harness) -> None:
    created = await instance(h, plugin_id="forecourt.docker-monitor", name="docker", config={})
    result = await execute(h, created["id"], {"interval_s": 30})
    assert result["status"] == "ok", result
    assert result["output"] == {"metrics": [{"name": "docker.reachable", "value": 0}]}
    assert "docker not reachable" in result["logs"]
