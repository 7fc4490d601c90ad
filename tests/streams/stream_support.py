"""Helpers for the live-stream tests: a served node, WebSocket clients, publishing."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

from served import Served

RECEIVE_TIMEOUT_S = 30.0  # a bound that catches a hang, never a measurement


def ws_url(served: Served, query: str = "") -> str:
    return served.url.replace("http://", "ws://") + "/ws" + (f"?{query}" if query else "")


async def open_socket(served: Served, key: str, query: str = "", **kwargs: Any) -> ClientConnection:
    return await connect(
        ws_url(served, query),
        additional_headers={"Authorization": f"Bearer {key}"},
        compression=None,
        open_timeout=RECEIVE_TIMEOUT_S,
        **kwargs,
    )


async def receive(socket: ClientConnection) -> dict[str, Any]:
    raw = await asyncio.wait_for(socket.recv(), RECEIVE_TIMEOUT_S)
    value: dict[str, Any] = json.loads(raw)
    return value


async def receive_type(socket: ClientConnection, *types: str) -> dict[str, Any]:
    """The next message of one of ``types`` (heartbeats and others skipped)."""
    while True:
        message = await receive(socket)
        if message["type"] in types:
            return message


async def command(socket: ClientConnection, body: Any, *types: str) -> dict[str, Any]:
    await socket.send(body if isinstance(body, str) else json.dumps(body))
    return await receive_type(socket, *(types or ("subscribed", "error")))


async def publish(
    client: httpx.AsyncClient, served: Served, key: str, type: str, data: Any = None
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}"}
    body = {"type": type, "data": data if data is not None else {"n": 1}}
    response = await client.post(served.url + "/api/v1/events", json=body, headers=headers)
    if response.status_code == 422 and "Unknown event type" in response.text:
        registered = await client.post(
            served.url + "/api/v1/event-types", json={"name": type}, headers=headers
        )
        assert registered.status_code == 201, registered.text
        response = await client.post(served.url + "/api/v1/events", json=body, headers=headers)
    assert response.status_code in (200, 201, 202), response.text
    published: dict[str, Any] = response.json()
    return published


async def create_key(
    client: httpx.AsyncClient, served: Served, scopes: list[str], admin_key: str | None = None
) -> str:
    response = await client.post(
        served.url + "/api/v1/keys",
        json={"name": "stream", "scopes": scopes, "tier": "enterprise"},
        headers={"Authorization": f"Bearer {admin_key or served.owner_key}"},
    )
    assert response.status_code == 201, response.text
    key: str = response.json()["key"]
    return key
