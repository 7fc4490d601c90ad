"""Alerts on the live stream: each change of an alert (opened, repeated, acknowledged,
resolved) reaches a WebSocket subscriber of the ``alerts`` channel on the real server, and a
subscriber in another tenant gets none of them."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from stream_support import RECEIVE_TIMEOUT_S, command, create_key, open_socket, receive_type

from served import serve

ALERTS = "/api/v1/alerts"
DISK = {"type": "disk.full", "severity": "high", "labels": {"host": "a"}}


async def test_each_change_of_an_alert_reaches_the_alerts_channel(settings_factory: Any) -> None:
    with serve(settings_factory()) as served:
        async with httpx.AsyncClient(base_url=served.url, timeout=RECEIVE_TIMEOUT_S) as client:
            other = await client.post(
                "/api/v1/tenants", json={"slug": "beta", "name": "B"}, headers=served.auth()
            )
            assert other.status_code == 201, other.text
            socket = await open_socket(served, served.owner_key)
            outsider = await open_socket(served, other.json()["admin_key"])
            for s in (socket, outsider):
                subscribed = await command(s, {"action": "subscribe", "channels": ["alerts"]})
                assert subscribed["subscriptions"] == ["alerts"], subscribed

            async def post(path: str, body: Any = None) -> dict[str, Any]:
                response = await client.post(path, json=body, headers=served.auth())
                assert response.status_code in (200, 201), response.text
                answer: dict[str, Any] = response.json()
                return answer

            opened = await post(ALERTS, DISK)
            await post(ALERTS, DISK)
            await post(f"{ALERTS}/{opened['id']}/acknowledge")
            await post(f"{ALERTS}/{opened['id']}/resolve")
            seen = [(await receive_type(socket, "alert"))["alert"] for _ in range(4)]
            assert [(a["id"], a["state"], a["count"]) for a in seen] == [
                (opened["id"], "open", 1),
                (opened["id"], "open", 2),
                (opened["id"], "acknowledged", 2),
                (opened["id"], "resolved", 2),
            ]
            # The outsider's stream is alive (its own alert arrives) and held none of these.
            theirs = await client.post(
                ALERTS, json=DISK, headers={"Authorization": f"Bearer {other.json()['admin_key']}"}
            )
            assert theirs.status_code == 201, theirs.text
            first = await receive_type(outsider, "alert")
            assert first["alert"]["id"] == theirs.json()["id"]
            await asyncio.gather(socket.close(), outsider.close())


async def test_the_alerts_channel_needs_alerts_read(settings_factory: Any) -> None:
    with serve(settings_factory()) as served:
        async with httpx.AsyncClient(timeout=RECEIVE_TIMEOUT_S) as client:
            metrics_reader = await create_key(client, served, ["metrics:read"])
            alerts_reader = await create_key(client, served, ["alerts:read"])
        refused_socket = await open_socket(served, metrics_reader)
        refused = await command(refused_socket, {"action": "subscribe", "channels": ["alerts"]})
        assert refused["code"] == "forbidden_channel", refused
        assert refused["required_scope"] == "alerts:read"
        socket = await open_socket(served, alerts_reader)
        subscribed = await command(socket, {"action": "subscribe", "channels": ["alerts"]})
        assert subscribed["subscriptions"] == ["alerts"], subscribed
        await asyncio.gather(socket.close(), refused_socket.close())
