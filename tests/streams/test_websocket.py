"""The WebSocket at /ws against the real server (uvicorn on loopback), with the
``websockets`` client library: each message type, resume, resync, scopes, bad input."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from stream_support import (
    RECEIVE_TIMEOUT_S,
    command,
    create_key,
    open_socket,
    publish,
    receive_type,
    ws_url,
)
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from forecourt.streams.messages import parse_id
from served import serve

LOOPBACK = "127.0.0.0/8"


async def closed_with(socket: Any) -> tuple[int | None, str]:
    """Read until the server closes: its close code and reason."""
    with pytest.raises(ConnectionClosed) as info:
        while True:
            await asyncio.wait_for(socket.recv(), RECEIVE_TIMEOUT_S)
    rcvd = info.value.rcvd
    return (rcvd.code, rcvd.reason) if rcvd is not None else (None, "")


async def test_events_deliveries_executions_metrics_and_alerts_arrive(
    settings_factory: Any,
) -> None:
    settings = settings_factory(webhook_allow_private=LOOPBACK)
    with serve(settings) as served:
        async with httpx.AsyncClient(timeout=RECEIVE_TIMEOUT_S) as client:
            socket = await open_socket(served, served.owner_key)
            subscribed = await command(
                socket,
                {"action": "subscribe", "channels": ["events:order.*", "deliveries", "alerts"]},
            )
            assert subscribed["type"] == "subscribed"
            assert subscribed["subscriptions"] == ["alerts", "deliveries", "events:order.*"]
            legacy = await command(socket, {"action": "subscribe", "plugin_ids": ["sysinfo"]})
            assert "metrics:sysinfo" in legacy["subscriptions"]
            assert "executions:sysinfo" in legacy["subscriptions"]

            # An endpoint nobody listens on: its delivery fails and is retried.
            endpoint = await client.post(
                served.url + "/api/v1/webhooks",
                json={"url": "http://127.0.0.1:9/hook", "event_types": ["order.*"]},
                headers=served.auth(),
            )
            assert endpoint.status_code == 201, endpoint.text
            await publish(client, served, served.owner_key, "user.created")  # not subscribed
            published = await publish(client, served, served.owner_key, "order.created")

            event = await receive_type(socket, "event")
            assert event["event"]["type"] == "order.created"
            assert event["event"]["event_id"] == published["event_id"]
            assert event["channel"] == "events:order.created"
            update = await receive_type(socket, "delivery_update")
            assert update["delivery"]["endpoint_id"] == endpoint.json()["id"]
            assert update["delivery"]["status"] in ("retrying", "failed")
            assert parse_id(update["id"]) > parse_id(event["id"])

            # A scheduled run's record and an alert, through the producers' own entry points.
            from forecourt.plugins.models import PluginExecution
            from forecourt.streams import producers

            fc = served.fc
            execution = PluginExecution(
                id="exe_test",
                tenant_id=fc.operator_tenant_id,
                instance_id="ins_test",
                plugin_id="sysinfo",
                version="1.0.0",
                trigger="schedule",
                started_at=__import__("datetime").datetime.now(__import__("datetime").UTC),
                duration_ms=12.5,
                status="ok",
                metrics=[{"name": "system.cpu.percent", "value": 3.5}],
            )

            async def produce() -> None:
                fc._execution_finished(execution)
                producers.alert_changed(fc.streams, str(fc.operator_tenant_id), {"id": "alr_1"})

            served.run(produce())
            done = await receive_type(socket, "execution_complete")
            assert done["plugin_id"] == "sysinfo"
            assert done["execution"]["success"] is True
            assert done["execution"]["metrics_count"] == 1
            metrics = await receive_type(socket, "metrics_update")
            assert metrics["metrics"] == [{"name": "system.cpu.percent", "value": 3.5}]
            alert = await receive_type(socket, "alert")
            assert alert["alert"] == {"id": "alr_1"}
            await socket.close()


async def test_resume_gets_exactly_what_was_missed_in_order(settings_factory: Any) -> None:
    with serve(settings_factory()) as served:
        async with httpx.AsyncClient(timeout=RECEIVE_TIMEOUT_S) as client:
            socket = await open_socket(served, served.owner_key, "channels=events:a.*")
            await receive_type(socket, "subscribed")
            await publish(client, served, served.owner_key, "a.one")
            first = await receive_type(socket, "event")
            await socket.close()
            missed = [
                (await publish(client, served, served.owner_key, f"a.m{i}"))["event_id"]
                for i in range(3)
            ]
            await publish(client, served, served.owner_key, "b.other")  # another channel
            again = await open_socket(
                served, served.owner_key, f"channels=events:a.*&last_id={first['id']}"
            )
            got = [await receive_type(again, "event") for _ in missed]
            assert [m["event"]["event_id"] for m in got] == missed
            ids = [first["id"], *(m["id"] for m in got)]
            keys = [tuple(map(int, i.split("-"))) for i in ids]
            assert keys == sorted(keys) and len(set(keys)) == len(keys)
            # Live again after the replay, nothing repeated.
            live = await publish(client, served, served.owner_key, "a.live")
            following = await receive_type(again, "event", "subscribed")
            if following["type"] == "subscribed":
                following = await receive_type(again, "event")
            assert following["event"]["event_id"] == live["event_id"]
            # The message form of resume, on a fresh connection.
            third = await open_socket(served, served.owner_key)
            await third.send(
                json.dumps({"action": "resume", "last_id": first["id"], "channels": ["events:a.*"]})
            )
            replayed = [await receive_type(third, "event") for _ in range(4)]
            assert [m["event"]["event_id"] for m in replayed] == [*missed, live["event_id"]]
            await again.close()
            await third.close()


async def test_past_the_window_events_resume_from_the_event_log_and_others_resync(
    settings_factory: Any,
) -> None:
    settings = settings_factory(stream_replay_max_messages=2, redis_url=None)
    with serve(settings) as served:
        async with httpx.AsyncClient(timeout=RECEIVE_TIMEOUT_S) as client:
            socket = await open_socket(served, served.owner_key, "channels=events:x.*,alerts")
            await receive_type(socket, "subscribed")
            await publish(client, served, served.owner_key, "x.first")
            first = await receive_type(socket, "event")
            await socket.close()
            missed = []
            for i in range(4):  # the ring keeps two: messages after ``first`` are gone
                missed.append(
                    (await publish(client, served, served.owner_key, f"x.n{i}"))["event_id"]
                )
                await publish(client, served, served.owner_key, f"y.n{i}")  # not subscribed
            again = await open_socket(
                served, served.owner_key, f"channels=events:x.*,alerts&last_id={first['id']}"
            )
            got = [await receive_type(again, "event", "resync") for _ in missed]
            assert [m["event"]["event_id"] for m in got if m["type"] == "event"] == missed
            assert [parse_id(m["id"]) for m in got] == sorted({parse_id(m["id"]) for m in got})
            # The alerts channel cannot resume: it reloads.
            resync = await receive_type(again, "resync", "event")
            assert resync["type"] == "resync" and resync["channels"] == ["alerts"]
            live = await publish(client, served, served.owner_key, "x.after")
            assert (await receive_type(again, "event"))["event"]["event_id"] == live["event_id"]
            await again.close()

            # Only channels without an event log: resync, then live.
            alerts = await open_socket(
                served, served.owner_key, f"channels=alerts&last_id={first['id']}"
            )
            resync = await receive_type(alerts, "resync")
            assert "channels" not in resync
            await alerts.close()


async def test_bad_input_gets_a_clear_error_and_changes_nothing(settings_factory: Any) -> None:
    settings = settings_factory(
        stream_max_subscriptions=3,
        stream_max_client_message_bytes=512,
        stream_client_messages_per_s=2.0,
    )
    with serve(settings) as served:
        async with httpx.AsyncClient(timeout=RECEIVE_TIMEOUT_S) as client:
            reader = await create_key(client, served, ["events:read"])
            socket = await open_socket(served, reader)
            cases = [
                ({"action": "subscribe", "channels": ["nonsense"]}, "unknown_channel"),
                (
                    {"action": "subscribe", "channels": ["events", "deliveries"]},
                    "forbidden_channel",
                ),
                ("{not json", "malformed_message"),
                ([1, 2], "malformed_message"),
                ({"action": "dance"}, "unknown_action"),
                (
                    {"action": "subscribe", "channels": [f"events:t{i}" for i in range(4)]},
                    "too_many_subscriptions",
                ),
                ({"action": "resume", "last_id": "99999999999999-0"}, "invalid_last_id"),
                ({"action": "resume", "last_id": "yesterday"}, "invalid-input"),
            ]
            for body, code in cases:
                error = await command(socket, body)
                assert error["type"] == "error", (body, error)
                assert error["code"] == code, (body, error)
                assert error["message"]
            forbidden = await command(socket, {"action": "subscribe", "channels": ["deliveries"]})
            assert forbidden["required_scope"] == "deliveries:read"
            # Nothing of the refused requests was kept.
            ok = await command(socket, {"action": "subscribe", "channels": ["events:z"]})
            assert ok["subscriptions"] == ["events:z"]
            # Oversized: closed with 1009.
            await socket.send(json.dumps({"action": "subscribe", "channels": ["x" * 600]}))
            assert (await closed_with(socket))[0] == 1009

            # A storm of messages: closed with 4029.
            storm = await open_socket(served, reader)
            for _ in range(50):
                await storm.send(json.dumps({"action": "ping"}))
            closed = await closed_with(storm)
            assert closed[0] == 4029 and "too many messages" in closed[1]

            # No credentials, a bad key: 4001.
            for headers in ({}, {"Authorization": "Bearer fck_live_" + "0" * 40}):
                async with connect(ws_url(served), additional_headers=headers) as anonymous:
                    assert (await closed_with(anonymous))[0] == 4001


async def test_a_key_as_subprotocol_is_accepted_and_the_protocol_echoed(
    settings_factory: Any,
) -> None:
    with serve(settings_factory()) as served:
        token = f"forecourt.bearer.{served.owner_key}"
        async with connect(ws_url(served), subprotocols=["forecourt.v1", token]) as socket:
            assert socket.subprotocol == "forecourt.v1"
            assert (await command(socket, {"action": "subscribe", "channels": ["alerts"]}))[
                "type"
            ] == "subscribed"
        async with connect(ws_url(served), subprotocols=[token]) as socket:
            assert socket.subprotocol == token
            assert (await command(socket, {"action": "ping"}, "pong"))["type"] == "pong"


async def test_a_session_cookie_needs_the_servers_origin(settings_factory: Any) -> None:
    settings = settings_factory(cookie_secure=False)
    with serve(settings) as served:
        async with httpx.AsyncClient(timeout=RECEIVE_TIMEOUT_S) as client:
            user = await client.post(
                served.url + "/api/v1/users",
                json={
                    "email": "ws@example.com",
                    "password": "a long passphrase 123",
                    "role": "admin",
                },
                headers=served.auth(),
            )
            assert user.status_code == 201, user.text
            login = await client.post(
                served.url + "/api/v1/auth/login",
                json={"email": "ws@example.com", "password": "a long passphrase 123"},
            )
            assert login.status_code == 200, login.text
            cookie = f"fc_session={login.cookies['fc_session']}"
        host = served.url.removeprefix("http://")
        async with connect(
            ws_url(served), additional_headers={"Cookie": cookie}, origin="https://evil.example"
        ) as socket:
            code, reason = await closed_with(socket)
            assert code == 4003 and "Origin" in reason
        async with connect(
            ws_url(served), additional_headers={"Cookie": cookie}, origin=f"http://{host}"
        ) as socket:
            assert (await command(socket, {"action": "subscribe", "channels": ["events"]}))[
                "type"
            ] == "subscribed"


async def test_a_slow_client_is_closed_with_4008_while_others_keep_receiving(
    settings_factory: Any,
) -> None:
    settings = settings_factory(
        stream_send_queue=16, max_event_bytes=300_000, max_body_bytes=400_000
    )
    big = {"blob": "x" * 200_000}
    with serve(settings) as served:
        async with httpx.AsyncClient(timeout=RECEIVE_TIMEOUT_S) as client:
            fast = await open_socket(served, served.owner_key, "channels=events:big.*")
            # The slow client reads nothing; its library buffers little.
            slow = await open_socket(
                served, served.owner_key, "channels=events:big.*", max_queue=1, max_size=2**22
            )
            await receive_type(fast, "subscribed")
            await receive_type(slow, "subscribed")

            async def read_until_marker() -> list[str]:
                types = []
                while not types or types[-1] != "big.marker":
                    types.append((await receive_type(fast, "event"))["event"]["type"])
                return types

            reader = asyncio.create_task(read_until_marker())
            published = 0
            # Until the server has let the slow client go (the fast one stays).
            while served.fc.streams.active_connections > 1:
                assert published < 400, "the slow client was never closed"
                await publish(client, served, served.owner_key, f"big.e{published}", big)
                published += 1
            code, reason = await closed_with(slow)
            assert code == 4008 and "fell behind" in reason
            # The fast client received everything, and still does.
            await publish(client, served, served.owner_key, "big.marker")
            types = await reader
            assert types == [*(f"big.e{i}" for i in range(published)), "big.marker"]
            await fast.close()


async def test_revoking_a_key_ends_its_connections(settings_factory: Any) -> None:
    with serve(settings_factory()) as served:
        async with httpx.AsyncClient(timeout=RECEIVE_TIMEOUT_S) as client:
            key = await client.post(
                served.url + "/api/v1/keys",
                json={"name": "revoked", "scopes": ["events:read"]},
                headers=served.auth(),
            )
            socket = await open_socket(served, key.json()["key"], "channels=events")
            await receive_type(socket, "subscribed")
            revoked = await client.post(
                served.url + f"/api/v1/keys/{key.json()['id']}/revoke", headers=served.auth()
            )
            assert revoked.status_code in (200, 204), revoked.text
            code, _ = await closed_with(socket)
            assert code == 4003


async def test_connections_per_key_are_limited(settings_factory: Any) -> None:
    with serve(settings_factory(stream_max_connections_per_key=1)) as served:
        first = await open_socket(served, served.owner_key)
        second = await open_socket(served, served.owner_key)
        code, reason = await closed_with(second)
        assert code == 4029 and "too many connections" in reason
        assert (await command(first, {"action": "ping"}, "pong"))["type"] == "pong"
        await first.close()


def test_bad_handshakes_are_not_upgraded_silently(settings_factory: Any) -> None:
    # A plain HTTP GET of /ws is not a WebSocket: the server says so.
    with serve(settings_factory()) as served:
        response = httpx.get(served.url + "/ws")
        assert response.status_code in (400, 404, 426)


async def test_heartbeats_carry_the_active_connections(settings_factory: Any) -> None:
    with serve(settings_factory(stream_heartbeat_s=0.2)) as served:
        first = await open_socket(served, served.owner_key, "channels=alerts")
        second = await open_socket(served, served.owner_key, "channels=alerts")
        await receive_type(second, "subscribed")
        beat = await receive_type(first, "heartbeat")
        while beat["active_connections"] != 2:  # the second may join after a first beat
            beat = await receive_type(first, "heartbeat")
        assert beat["id"] and beat["timestamp"]
        await first.close()
        await second.close()


async def test_suspending_a_tenant_ends_its_connections_only(settings_factory: Any) -> None:
    with serve(settings_factory()) as served:
        async with httpx.AsyncClient(timeout=RECEIVE_TIMEOUT_S, headers=served.auth()) as client:
            made = await client.post(
                served.url + "/api/v1/tenants", json={"slug": "acme", "name": "acme"}
            )
            assert made.status_code == 201, made.text
            acme = await open_socket(served, made.json()["admin_key"], "channels=events")
            mine = await open_socket(served, served.owner_key, "channels=events")
            await receive_type(acme, "subscribed")
            await receive_type(mine, "subscribed")
            suspended = await client.post(
                served.url + f"/api/v1/tenants/{made.json()['id']}/suspend"
            )
            assert suspended.status_code == 200, suspended.text
            code, reason = await closed_with(acme)
            assert code == 4003 and "suspended" in reason
            refused = await open_socket(served, made.json()["admin_key"])
            assert (await closed_with(refused))[0] == 4003
            assert (await command(mine, {"action": "ping"}, "pong"))["type"] == "pong"
            await mine.close()


async def test_events_emitted_inside_a_service_transaction_arrive_after_its_commit(
    settings_factory: Any,
) -> None:
    from forecourt.events.service import emit

    with serve(settings_factory()) as served:
        socket = await open_socket(served, served.owner_key, "channels=events:endpoint.*")
        await receive_type(socket, "subscribed")
        fc = served.fc
        tenant = str(fc.operator_tenant_id)

        async def emit_twice() -> str:
            async with fc.sessionmaker() as session:  # rolled back: never streamed
                await emit(session, tenant, "endpoint.disabled", {"endpoint_id": "ep_gone"})
                await session.rollback()
            async with fc.sessionmaker() as session:
                event = await emit(session, tenant, "endpoint.disabled", {"endpoint_id": "ep_kept"})
                await session.commit()
                return event.id

        event_id = served.run(emit_twice())
        got = await receive_type(socket, "event")
        assert got["event"]["event_id"] == event_id
        assert got["event"]["data"]["endpoint_id"] == "ep_kept"
        await socket.close()
