"""Live streams across processes: two ``forecourt serve --no-workers`` API nodes and one
``forecourt worker`` on PostgreSQL + Redis. A WebSocket subscriber on node A sees the events
published on node B and the deliveries the worker makes, and resumes on node B."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from processes import Node, ThreadedReceiver, terminate_all
from websockets.asyncio.client import ClientConnection, connect

from commands import clean_env
from commands import run as cli
from conftest import REDIS_URL, RUN_ID

pytestmark = [pytest.mark.postgres, pytest.mark.redis]
RECEIVE_TIMEOUT_S = 30.0  # a bound that catches a hang


async def _next(socket: ClientConnection, type: str) -> dict[str, Any]:
    while True:
        message: dict[str, Any] = json.loads(
            await asyncio.wait_for(socket.recv(), RECEIVE_TIMEOUT_S)
        )
        if message["type"] == type:
            return message


def _ws(node: Node, query: str) -> str:
    return node.base_url.replace("http://", "ws://") + "/ws?" + query


async def test_a_subscriber_on_one_node_sees_the_other_node_and_the_worker(
    tmp_path: Path, empty_pg_database: str, redis_prefix: str
) -> None:
    env = clean_env(
        tmp_path / "data",
        database_url=empty_pg_database,
        redis_url=REDIS_URL,
        redis_prefix=redis_prefix,
        webhook_allow_private="127.0.0.0/8",
        secret_key="streams-nodes-" + RUN_ID,
    )
    migrated = cli(env, tmp_path, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    nodes: list[Node] = []
    try:
        nodes.append(Node.serve(env, tmp_path, "--no-workers", name="a").start())
        nodes.append(Node.serve(env, tmp_path, "--no-workers", name="b").start())
        nodes.append(Node.worker(env, tmp_path).start())
        node_a, node_b = nodes[0], nodes[1]
        key = (tmp_path / "data" / "owner-key").read_text().strip()
        auth = {"Authorization": f"Bearer {key}"}
        with ThreadedReceiver() as receiver:
            async with httpx.AsyncClient(timeout=RECEIVE_TIMEOUT_S, headers=auth) as client:
                endpoint = await client.post(
                    node_b.base_url + "/api/v1/webhooks",
                    json={"url": receiver.url(), "event_types": ["dashboard.*"]},
                )
                assert endpoint.status_code == 201, endpoint.text
                socket = await connect(
                    _ws(node_a, "channels=events:dashboard.*,deliveries"),
                    additional_headers=auth,
                )
                await _next(socket, "subscribed")
                published = await client.post(
                    node_b.base_url + "/api/v1/events",
                    json={"type": "dashboard.created", "data": {"id": 1}},
                )
                assert published.status_code in (200, 201, 202), published.text
                event_id = published.json()["event_id"]
                event = await _next(socket, "event")
                assert event["event"]["event_id"] == event_id
                update = await _next(socket, "delivery_update")
                assert update["delivery"]["endpoint_id"] == endpoint.json()["id"]
                assert update["delivery"]["status"] == "succeeded"
                await socket.close()

                # Missed while away; resumed on node B: the event and its delivery, in order.
                again_published = await client.post(
                    node_a.base_url + "/api/v1/events",
                    json={"type": "dashboard.created", "data": {"id": 2}},
                )
                assert again_published.status_code in (200, 201, 202)
                resumed = await connect(
                    _ws(node_b, f"channels=events:dashboard.*,deliveries&last_id={update['id']}"),
                    additional_headers=auth,
                )
                replayed = await _next(resumed, "event")
                assert replayed["event"]["event_id"] == again_published.json()["event_id"]
                delivered = await _next(resumed, "delivery_update")
                assert delivered["delivery"]["status"] == "succeeded"
                await resumed.close()
    finally:
        terminate_all(nodes)
