"""Resuming past the replay window: ``events`` channels get what they missed from the event
log, in order and once, over the WebSocket and SSE, on SQLite and on PostgreSQL + Redis, on
whichever node the client comes back to; the ids of events sent from the event log resume
exactly after them."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest
from httpx_sse import aconnect_sse
from redis.asyncio import Redis
from stream_support import RECEIVE_TIMEOUT_S, open_socket, publish, receive_type

from conftest import REDIS_URL
from forecourt.settings import Settings
from forecourt.streams.messages import parse_id
from forecourt.streams.replay import STREAM_KEY
from served import Served, serve

WINDOW_S = 1.0


async def forget(settings: Settings) -> None:
    """Let every message so far pass the window; with Redis, trim the stream as the writers'
    MINID trimming does in time (which may keep some entries a while longer)."""
    await asyncio.sleep(WINDOW_S + 0.2)
    if settings.redis_url:
        redis = Redis.from_url(settings.redis_url)
        try:
            now_ms = int(time.time() * 1000)
            await redis.xtrim(
                settings.redis_prefix + STREAM_KEY, minid=f"{now_ms}-0", approximate=False
            )
        finally:
            await redis.aclose()


async def publish_all(client: httpx.AsyncClient, served: Served, types: list[str]) -> list[str]:
    return [(await publish(client, served, served.owner_key, t))["event_id"] for t in types]


async def test_a_websocket_resumes_events_from_the_event_log(settings_factory: Any) -> None:
    settings = settings_factory(stream_replay_window_s=WINDOW_S)
    with serve(settings) as served:
        async with httpx.AsyncClient(timeout=RECEIVE_TIMEOUT_S) as client:
            socket = await open_socket(served, served.owner_key, "channels=events:w.*")
            await receive_type(socket, "subscribed")
            await publish(client, served, served.owner_key, "w.first")
            first = await receive_type(socket, "event")
            await socket.close()
            missed = await publish_all(client, served, ["w.a", "other.a", "w.b", "w.c"])
            missed = [missed[0], missed[2], missed[3]]
            await forget(settings)

            again = await open_socket(
                served, served.owner_key, f"channels=events:w.*&last_id={first['id']}"
            )
            got = [await receive_type(again, "event", "resync") for _ in missed]
            assert [m["type"] for m in got] == ["event"] * len(missed)
            assert [m["event"]["event_id"] for m in got] == missed
            ids = [parse_id(m["id"]) for m in got]
            assert ids == sorted(set(ids)) and ids[0] > parse_id(first["id"])
            live = await publish(client, served, served.owner_key, "w.live")
            after = await receive_type(again, "event", "resync")
            assert after["event"]["event_id"] == live["event_id"]  # nothing twice, no resync
            await again.close()

            # From the id of an event the event log gave: exactly the ones after it.
            third = await open_socket(served, served.owner_key)
            await third.send(
                json.dumps(
                    {"action": "resume", "last_id": got[0]["id"], "channels": ["events:w.*"]}
                )
            )
            rest = [await receive_type(third, "event", "resync") for _ in range(3)]
            assert [m["event"]["event_id"] for m in rest] == [*missed[1:], live["event_id"]]
            await third.close()


async def test_sse_last_event_id_resumes_events_from_the_event_log(settings_factory: Any) -> None:
    settings = settings_factory(stream_replay_window_s=WINDOW_S)
    with serve(settings) as served:
        async with httpx.AsyncClient(
            base_url=served.url, headers=served.auth(), timeout=RECEIVE_TIMEOUT_S
        ) as client:
            async with aconnect_sse(
                client, "GET", "/api/v1/stream", params={"channels": "events:s.*"}
            ) as source:
                events = source.aiter_sse()
                while (await anext(events)).event != "subscribed":
                    pass
                await publish(client, served, served.owner_key, "s.first")
                first = await anext(events)
                assert first.event == "event"
            missed = await publish_all(client, served, ["s.a", "s.b"])
            await forget(settings)
            got: list[str] = []
            async with aconnect_sse(
                client,
                "GET",
                "/api/v1/stream",
                params={"channels": "events:s.*"},
                headers={"Last-Event-ID": first.id},
            ) as source:
                async for sse in source.aiter_sse():
                    assert sse.event != "resync", sse.data
                    if sse.event == "event":
                        got.append(json.loads(sse.data)["event"]["event_id"])
                    if len(got) == len(missed):
                        break
            assert got == missed


async def test_too_many_missed_events_get_resync(settings_factory: Any) -> None:
    settings = settings_factory(stream_replay_window_s=WINDOW_S, stream_resume_max_events=1)
    with serve(settings) as served:
        async with httpx.AsyncClient(timeout=RECEIVE_TIMEOUT_S) as client:
            socket = await open_socket(served, served.owner_key, "channels=events:t.*")
            await receive_type(socket, "subscribed")
            await publish(client, served, served.owner_key, "t.first")
            first = await receive_type(socket, "event")
            await socket.close()
            await publish_all(client, served, ["t.a", "t.b"])
            await forget(settings)
            again = await open_socket(
                served, served.owner_key, f"channels=events:t.*&last_id={first['id']}"
            )
            assert (await receive_type(again, "event", "resync"))["type"] == "resync"
            await again.close()


@pytest.mark.postgres
@pytest.mark.redis
async def test_past_the_window_on_the_other_node(
    pg_database: str, redis_prefix: str, tmp_path: Any
) -> None:
    def settings(name: str) -> Settings:
        return Settings(
            data_dir=tmp_path / name,
            secret_key="nodes-secret-" + "k" * 20,
            database_url=pg_database,
            redis_url=REDIS_URL,
            redis_prefix=redis_prefix,
            stream_replay_window_s=WINDOW_S,
        )

    with serve(settings("a")) as node_a:
        (tmp_path / "b").mkdir()
        (tmp_path / "b" / "owner-key").write_text(node_a.owner_key)
        with serve(settings("b")) as node_b:
            async with httpx.AsyncClient(timeout=RECEIVE_TIMEOUT_S) as client:
                socket = await open_socket(node_a, node_a.owner_key, "channels=events")
                await receive_type(socket, "subscribed")
                await publish(client, node_a, node_a.owner_key, "n.first")
                first = await receive_type(socket, "event")
                await socket.close()
                missed = await publish_all(client, node_a, ["n.a", "n.b"])
                await forget(settings("a"))
                again = await open_socket(
                    node_b, node_b.owner_key, f"channels=events&last_id={first['id']}"
                )
                got = [await receive_type(again, "event", "resync") for _ in missed]
                assert [m.get("event", {}).get("event_id") for m in got] == missed
                live = await publish(client, node_a, node_a.owner_key, "n.live")
                after = await receive_type(again, "event", "resync")
                assert after["event"]["event_id"] == live["event_id"]
                await again.close()
