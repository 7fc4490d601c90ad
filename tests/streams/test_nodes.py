"""Two nodes on one PostgreSQL and one Redis: a message produced on either reaches subscribers
on both, a client resumes on the other node, and two tenants never see each other's."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from stream_support import RECEIVE_TIMEOUT_S, command, open_socket, publish, receive_type

from conftest import REDIS_URL
from forecourt.settings import Settings
from served import serve

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


async def test_two_nodes_share_the_stream_resume_and_keep_tenants_apart(
    pg_database: str, redis_prefix: str, tmp_path: Any
) -> None:
    def settings(name: str) -> Settings:
        return Settings(
            data_dir=tmp_path / name,
            secret_key="nodes-secret-" + "k" * 20,
            database_url=pg_database,
            redis_url=REDIS_URL,
            redis_prefix=redis_prefix,
        )

    with serve(settings("a")) as node_a:
        (tmp_path / "b").mkdir()
        (tmp_path / "b" / "owner-key").write_text(node_a.owner_key)
        with serve(settings("b")) as node_b:
            async with httpx.AsyncClient(timeout=RECEIVE_TIMEOUT_S) as client:
                made = await client.post(
                    node_a.url + "/api/v1/tenants",
                    json={"slug": "other", "name": "other"},
                    headers=node_a.auth(),
                )
                assert made.status_code == 201, made.text
                other_key = made.json()["admin_key"]

                # Tenant one listens on node A, tenant two on node B.
                one = await open_socket(node_a, node_a.owner_key, "channels=events")
                two = await open_socket(node_b, other_key, "channels=events")
                await receive_type(one, "subscribed")
                await receive_type(two, "subscribed")

                # Published on B for tenant one, on A for tenant two: each crosses nodes.
                from_b = await publish(client, node_b, node_a.owner_key, "node.from_b")
                got = await receive_type(one, "event")
                assert got["event"]["event_id"] == from_b["event_id"]
                from_a = await publish(client, node_a, other_key, "node.from_a")
                got_two = await receive_type(two, "event")
                assert got_two["event"]["event_id"] == from_a["event_id"]
                # Markers: what arrives next on each is its own tenant's, nothing before it.
                marker_one = await publish(client, node_a, node_a.owner_key, "node.marker")
                marker_two = await publish(client, node_b, other_key, "node.marker")
                seen_one = await receive_type(one, "event")
                assert seen_one["event"]["event_id"] == marker_one["event_id"]
                assert (await receive_type(two, "event"))["event"]["event_id"] == marker_two[
                    "event_id"
                ]
                await one.close()

                # Missed while away, published on A; resumed on B: exactly those, in order.
                missed = [
                    (await publish(client, node_a, node_a.owner_key, f"node.m{i}"))["event_id"]
                    for i in range(3)
                ]
                await publish(client, node_a, other_key, "node.not_yours")
                again = await open_socket(node_b, node_b.owner_key)
                resumed = await command(
                    again,
                    {"action": "resume", "last_id": seen_one["id"], "channels": ["events"]},
                    "event",
                )
                rest = [resumed] + [await receive_type(again, "event") for _ in missed[1:]]
                assert [m["event"]["event_id"] for m in rest] == missed
                await again.close()
                await two.close()
