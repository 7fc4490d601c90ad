"""Every edge of the JSON codec, through every door that takes free JSON: a 422 naming the
field (never a 500) and nothing stored; values just inside the limits are stored and read
back exactly; bare JSON scalars as event data; a bad request in a group commit fails alone."""

from __future__ import annotations

import asyncio
import io
import json
import zipfile
from typing import Any

import pytest
from sqlalchemy import func, select, text

from conftest import Harness
from forecourt.events import outbox

PROBLEM = "application/problem+json"
TYPE = "codec.edge"
PLUGIN = "com.example.echo"
MANIFEST = f"""
id = "{PLUGIN}"
name = "Echo"
version = "1.0.0"
type = "transformation"
entry_point = "plugin:run"
"""
CODE = "def run(payload):\n    return payload\n"
SETTINGS = {"plugin_allow_unsigned": True, "webhook_allow_private": "127.0.0.0/8"}
TABLES = (
    "events",
    "event_types",
    "webhook_endpoints",
    "webhook_deliveries",
    "plugin_instances",
    "plugin_executions",
    "plugin_event_queue",
)


def nested(depth: int) -> Any:
    value: Any = 1
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


# Each edge as the value of a free-JSON field (an object, so object-only fields take it too),
# and the path inside the field that the 422 names (a prefix of it, for the deep ones).
EDGES: dict[str, tuple[Any, str]] = {
    "depth 65": ({"x": nested(64)}, ".x"),
    "depth 300": ({"x": nested(299)}, ".x"),
    "2**64": ({"x": [0, 2**64]}, ".x[1]"),
    "-2**63-1": ({"x": -(2**63) - 1}, ".x"),
    "lone surrogate in a value": ({"x": ["ok", "\ud800"]}, ".x[1]"),
    "lone surrogate in a key": ({"x": {"\udc00": 1}}, '.x["\\udc00"]'),
    "NaN": ({"x": float("nan")}, ".x"),
    "Infinity": ({"x": [float("inf")]}, ".x[0]"),
}
HUGE = {"x": "a" * 2_000_000}  # past the request body cap
# Just inside every limit: stored and read back exactly.
INSIDE = {"deep": nested(63), "max": 2**64 - 1, "min": -(2**63), "text": "\U0001f600"}


def body(value: Any) -> bytes:
    # The standard library writes NaN and escapes lone surrogates: what a client may send.
    return json.dumps(value).encode()


async def send(h: Harness, method: str, path: str, value: Any) -> Any:
    return await h.client.request(
        method,
        path,
        content=body(value),
        headers={**h.auth(), "Content-Type": "application/json"},
    )


async def counts(h: Harness) -> dict[str, int]:
    async with h.fc.sessionmaker() as session:
        return {
            table: int(await session.scalar(select(func.count()).select_from(text(table))) or 0)
            for table in TABLES
        }


def refused(response: Any, field: str, edge: str) -> None:
    assert response.status_code == 422, (edge, response.status_code, response.text)
    assert response.headers["content-type"] == PROBLEM
    fields = [e["field"] for e in response.json()["errors"]]
    assert any(f.startswith(field) for f in fields), (edge, field, fields)


async def install_plugin(h: Harness) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("forecourt-plugin.toml", MANIFEST)
        archive.writestr("plugin.py", CODE)
    response = await h.client.post(
        "/api/v1/plugins",
        files={"package": ("plugin.zip", buffer.getvalue(), "application/zip")},
        headers=h.auth(),
    )
    assert response.status_code == 201, response.text


@pytest.fixture
async def h(harness_factory: Any) -> Harness:
    harness: Harness = await harness_factory(**SETTINGS)
    created = await send(harness, "POST", "/api/v1/event-types", {"name": TYPE})
    assert created.status_code == 201, created.text
    await install_plugin(harness)
    return harness


async def test_every_edge_through_every_door_is_a_422_naming_the_field(h: Harness) -> None:
    hook = await send(h, "POST", "/api/v1/webhooks", {"url": "http://127.0.0.1:9/h"})
    assert hook.status_code == 201, hook.text
    hook_id = hook.json()["id"]
    made = await send(h, "POST", "/api/v1/plugin-instances", {"plugin_id": PLUGIN, "name": "e"})
    assert made.status_code == 201, made.text
    instance_id = made.json()["id"]
    resources = (f"/api/v1/webhooks/{hook_id}", f"/api/v1/plugin-instances/{instance_id}")

    def doors(value: Any) -> list[tuple[str, str, Any, str]]:
        """(method, path, body, field) of every door, with ``value`` as its free JSON."""
        return [
            ("POST", "/api/v1/events", {"type": TYPE, "data": value}, "data"),
            (
                "POST",
                "/api/v1/events/batch",
                {"events": [{"type": TYPE, "data": 1}, {"type": TYPE, "data": value}]},
                "events.1.data",
            ),
            ("POST", "/api/v1/event-types", {"name": "codec.other", "schema": value}, "schema"),
            ("PATCH", f"/api/v1/event-types/{TYPE}", {"schema": value}, "schema"),
            (
                "POST",
                "/api/v1/webhooks",
                {"url": "http://127.0.0.1:9/h", "metadata": value},
                "metadata",
            ),
            ("PATCH", resources[0], {"metadata": value}, "metadata"),
            (
                "POST",
                "/api/v1/plugin-instances",
                {"plugin_id": PLUGIN, "name": "other", "config": value},
                "config",
            ),
            ("PATCH", resources[1], {"config": value}, "config"),
            ("POST", f"{resources[1]}/execute", {"input": value}, "input"),
        ]

    async def states() -> list[Any]:
        got = [await h.client.get(path, headers=h.auth()) for path in resources]
        got.append(await h.client.get(f"/api/v1/event-types/{TYPE}", headers=h.auth()))
        return [
            {k: v for k, v in r.json().items() if k not in ("last_status", "next_run_at")}
            for r in got
        ]

    before, shown = await counts(h), await states()
    for edge, (value, path) in EDGES.items():
        for method, route, request, field in doors(value):
            response = await send(h, method, route, request)
            refused(response, field + path, f"{edge} via {method} {route}")
    for method, route, request, _ in doors(HUGE):
        response = await send(h, method, route, request)
        assert response.status_code == 413, (route, response.text)
    assert await counts(h) == before
    assert await states() == shown


async def test_values_just_inside_the_limits_are_stored_and_read_back(h: Harness) -> None:
    published = await send(h, "POST", "/api/v1/events", {"type": TYPE, "data": INSIDE})
    assert published.status_code == 201, published.text
    event_id = published.json()["event_id"]
    got = await h.client.get(f"/api/v1/events/{event_id}", headers=h.auth())
    assert got.status_code == 200, got.text
    assert got.json()["data"] == INSIDE
    hook = await send(
        h, "POST", "/api/v1/webhooks", {"url": "http://127.0.0.1:9/h", "metadata": INSIDE}
    )
    assert hook.status_code == 201, hook.text
    shown = await h.client.get(f"/api/v1/webhooks/{hook.json()['id']}", headers=h.auth())
    assert shown.json()["metadata"] == INSIDE


@pytest.mark.parametrize("data", [42, -1, 0.5, 1.0, 2**64 - 1, -(2**63), "text", True, None])
async def test_bare_json_values_as_event_data_are_stored_and_read_back(
    h: Harness, data: Any
) -> None:
    published = await send(h, "POST", "/api/v1/events", {"type": TYPE, "data": data})
    assert published.status_code == 201, published.text
    event_id = published.json()["event_id"]
    listed = await h.client.get("/api/v1/events", headers=h.auth())
    assert listed.status_code == 200, listed.text
    [item] = [e for e in listed.json()["items"] if e["event_id"] == event_id]
    got = await h.client.get(f"/api/v1/events/{event_id}", headers=h.auth())
    assert got.status_code == 200, got.text
    for shown in (item["data"], got.json()["data"]):
        assert shown == data and type(shown) is type(data)  # 1.0 stays a float
    # Repeating it with its Idempotency-Key replays it (the stored data compares equal).
    headers = {**h.auth(), "Idempotency-Key": f"k-{event_id}"}
    first = await h.client.post(
        "/api/v1/events", json={"type": TYPE, "data": data}, headers=headers
    )
    again = await h.client.post(
        "/api/v1/events", json={"type": TYPE, "data": data}, headers=headers
    )
    assert (first.status_code, again.status_code) == (201, 200), again.text


async def test_a_request_the_database_refuses_fails_alone_in_its_group_commit(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One request whose rows the database refuses shares a group commit with valid ones:
    it alone fails, the others are stored."""
    real_write = outbox.write
    shared: list[int] = []  # sizes of the group commits that held the bad request

    async def write(session: Any, plans: Any) -> None:
        if any(row["data"] == "poison" for plan in plans for row in plan.events):
            shared.append(len(plans))
            raise RuntimeError("the database refused a value")
        await real_write(session, plans)

    monkeypatch.setattr(outbox, "write", write)
    before = (await counts(h))["events"]
    requests = [{"type": TYPE, "data": i} for i in range(30)]
    requests.insert(15, {"type": TYPE, "data": "poison"})
    responses = await asyncio.gather(
        *(h.client.post("/api/v1/events", json=r, headers=h.auth()) for r in requests)
    )
    statuses = [r.status_code for r in responses]
    assert max(shared) > 1  # it did share a group commit
    assert statuses[15] == 500
    assert statuses[:15] + statuses[16:] == [201] * 30
    assert (await counts(h))["events"] == before + 30
