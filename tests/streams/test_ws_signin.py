"""The WebSocket handshake resolves credentials as HTTP does: failed sign-ins count against
the address's limit, and an address over it gets no lookup of new credentials, a valid
session included (closed with 4029 over /ws, 429 over HTTP)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from stream_support import RECEIVE_TIMEOUT_S, command, ws_url
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from served import serve

PASSWORD = "a long passphrase 123"


async def close_code(socket: ClientConnection) -> int | None:
    with pytest.raises(ConnectionClosed) as info:
        while True:
            await asyncio.wait_for(socket.recv(), RECEIVE_TIMEOUT_S)
    return info.value.rcvd.code if info.value.rcvd is not None else None


async def test_bad_cookies_over_ws_meet_the_address_limit(settings_factory: Any) -> None:
    settings = settings_factory(cookie_secure=False, ip_rate_limit={"minute": 4})
    with serve(settings) as served:
        origin = served.url
        async with httpx.AsyncClient(timeout=RECEIVE_TIMEOUT_S) as client:
            user = await client.post(
                served.url + "/api/v1/users",
                json={"email": "in@example.com", "password": PASSWORD, "role": "admin"},
                headers=served.auth(),
            )
            assert user.status_code == 201, user.text
            login = await client.post(
                served.url + "/api/v1/auth/login",
                json={"email": "in@example.com", "password": PASSWORD},
            )
            assert login.status_code == 200, login.text
            good = f"fc_session={login.cookies['fc_session']}"

            # A valid session while the address is under its limit: admitted.
            async with connect(
                ws_url(served), additional_headers={"Cookie": good}, origin=origin
            ) as socket:
                assert (await command(socket, {"action": "ping"}, "pong"))["type"] == "pong"

            # Bad session tokens: each refused (4001) and charged to the address, until 4029.
            codes = []
            for i in range(6):
                socket = await connect(
                    ws_url(served),
                    additional_headers={"Cookie": f"fc_session=bad-token-{i}"},
                    origin=origin,
                )
                codes.append(await close_code(socket))
            assert codes[0] == 4001 and codes[-1] == 4029, codes

            # Over its limit, the address gets no lookup of a session, a valid one included,
            # over /ws as over HTTP.
            socket = await connect(
                ws_url(served), additional_headers={"Cookie": good}, origin=origin
            )
            assert await close_code(socket) == 4029
            over_http = await client.get(served.url + "/api/v1/keys", headers={"Cookie": good})
            assert over_http.status_code == 429, over_http.text
