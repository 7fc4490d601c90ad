"""The event stream at GET /api/v1/stream against the real server, read with httpx-sse:
the same channels and ids as the WebSocket, Last-Event-ID resume, and problems up front."""

from __future__ import annotations

import json
from typing import Any

import httpx
from httpx_sse import aconnect_sse
from stream_support import RECEIVE_TIMEOUT_S, create_key, publish

from conftest import problem
from forecourt import codec
from served import serve

STREAM = "/api/v1/stream"


async def test_events_arrive_and_last_event_id_resumes(settings_factory: Any) -> None:
    with serve(settings_factory()) as served:
        async with httpx.AsyncClient(
            base_url=served.url, headers=served.auth(), timeout=RECEIVE_TIMEOUT_S
        ) as client:
            async with aconnect_sse(
                client, "GET", STREAM, params={"channels": "events:s.*"}
            ) as source:
                assert source.response.headers["content-type"].startswith("text/event-stream")
                events = source.aiter_sse()
                subscribed = await anext(events)
                while subscribed.event != "subscribed":
                    subscribed = await anext(events)
                assert json.loads(subscribed.data)["channels"] == ["events:s.*"]
                first = await publish(client, served, served.owner_key, "s.first")
                sse = await anext(events)
                assert sse.event == "event"
                body = json.loads(sse.data)
                assert body["event"]["event_id"] == first["event_id"]
                assert sse.id == body["id"]
            missed = [
                (await publish(client, served, served.owner_key, f"s.m{i}"))["event_id"]
                for i in range(2)
            ]
            async with aconnect_sse(
                client,
                "GET",
                STREAM,
                params={"channels": "events:s.*"},
                headers={"Last-Event-ID": sse.id},
            ) as source:
                got = []
                async for replayed in source.aiter_sse():
                    if replayed.event == "event":
                        got.append(json.loads(replayed.data)["event"]["event_id"])
                    if len(got) == len(missed):
                        break
                assert got == missed


async def test_bad_requests_are_problems_before_the_stream(settings_factory: Any) -> None:
    with serve(settings_factory()) as served:
        async with httpx.AsyncClient(base_url=served.url, timeout=RECEIVE_TIMEOUT_S) as client:
            reader = await create_key(client, served, ["events:read"])
            auth = {"Authorization": f"Bearer {reader}"}
            problem(await client.get(STREAM, params={"channels": "events"}), 401, "unauthenticated")
            unknown = problem(
                await client.get(STREAM, params={"channels": "nonsense"}, headers=auth),
                422,
                "invalid-input",
            )
            assert unknown["errors"][0]["field"] == "channels.0"
            forbidden = problem(
                await client.get(STREAM, params={"channels": "events,deliveries"}, headers=auth),
                403,
                "forbidden",
            )
            assert forbidden["required_scope"] == "deliveries:read"
            future = problem(
                await client.get(
                    STREAM,
                    params={"channels": "events"},
                    headers={**auth, "Last-Event-ID": "99999999999999-0"},
                ),
                409,
                "conflict",
            )
            assert "ahead of the stream" in future["detail"]
            problem(
                await client.get(
                    STREAM, params={"channels": "events", "last_id": "x"}, headers=auth
                ),
                422,
                "invalid-input",
            )
            problem(await client.get(STREAM, headers=auth), 422, "invalid-input")


async def test_a_stream_sends_keep_alive_comments_and_ends_after_its_duration(
    settings_factory: Any,
) -> None:
    settings = settings_factory(stream_keepalive_s=0.05, stream_max_duration_s=1.0)
    with serve(settings) as served:
        async with httpx.AsyncClient(
            base_url=served.url, headers=served.auth(), timeout=RECEIVE_TIMEOUT_S
        ) as client:
            response = await client.get(STREAM, params={"channels": "alerts"})
            assert response.status_code == 200
            assert ": keep-alive" in response.text
            assert "event: subscribed" in response.text


async def test_streams_past_the_connections_of_a_key_are_429(settings_factory: Any) -> None:
    with serve(settings_factory(stream_max_connections_per_key=1)) as served:
        async with (
            httpx.AsyncClient(
                base_url=served.url, headers=served.auth(), timeout=RECEIVE_TIMEOUT_S
            ) as client,
            aconnect_sse(client, "GET", STREAM, params={"channels": "alerts"}) as held,
        ):
            events = held.aiter_sse()
            first = await anext(events)
            while first.event != "subscribed":
                first = await anext(events)
            refused = await client.get(STREAM, params={"channels": "alerts"})
            problem(refused, 429, "rate-limited")


async def test_an_event_at_the_depth_limit_is_streamed(settings_factory: Any) -> None:
    deep: Any = 1
    for _ in range(codec.max_depth() - 1):
        deep = {"a": deep}
    with serve(settings_factory()) as served:
        async with (
            httpx.AsyncClient(
                base_url=served.url, headers=served.auth(), timeout=RECEIVE_TIMEOUT_S
            ) as client,
            aconnect_sse(client, "GET", STREAM, params={"channels": "events:deep.*"}) as source,
        ):
            events = source.aiter_sse()
            while (await anext(events)).event != "subscribed":
                pass
            await publish(client, served, served.owner_key, "deep.one", deep)
            await publish(client, served, served.owner_key, "deep.two")
            first, second = await anext(events), await anext(events)
            assert json.loads(first.data)["event"]["data"] == deep
            assert json.loads(second.data)["event"]["type"] == "deep.two"
