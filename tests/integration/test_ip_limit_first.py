"""The per-IP limit comes before any key or session lookup: a flood of bogus keys or cookies
costs at most one database query per distinct credential, and none once the address is over
its limit; traffic of valid, known keys never counts against the address."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from sqlalchemy import event

from conftest import Harness
from forecourt.keys import format as key_format

KEYS = "/api/v1/keys"
IP_LIMIT = 20


@contextmanager
def credential_lookups(harness: Harness) -> Iterator[list[str]]:
    """Every lookup of a key or session token by its hash while inside the block (the
    route's own reads of the keys table are not lookups)."""
    seen: list[str] = []

    def listener(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        text = " ".join(statement.split()).lower()
        if text.startswith("select") and (
            "api_keys.key_hash =" in text or "user_sessions.token_hash =" in text
        ):
            seen.append(text)

    engine = harness.fc.engine.sync_engine
    event.listen(engine, "before_cursor_execute", listener)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", listener)


async def with_key(h: Harness, key: str) -> httpx.Response:
    return await h.client.get(KEYS, headers={"Authorization": f"Bearer {key}"})


async def with_cookie(h: Harness, token: str) -> httpx.Response:
    return await h.client.get(KEYS, headers={"Cookie": f"fc_session={token}"})


def assert_ip_limited(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert int(response.headers["retry-after"]) >= 1
    body = response.json()
    assert body["type"] == "urn:forecourt:problem:rate-limited"
    assert body["limit"] == IP_LIMIT
    assert response.headers["ratelimit-policy"] == f'"minute";q={IP_LIMIT};w=60'


async def test_a_flood_of_bogus_credentials_costs_no_lookups_past_the_ip_limit(
    harness_factory: Any,
) -> None:
    h: Harness = await harness_factory(ip_rate_limit={"minute": IP_LIMIT})
    bogus_keys = [key_format.generate() for _ in range(3)]
    bogus_cookies = [f"bogus-session-{i}" for i in range(2)]
    with credential_lookups(h) as lookups:
        # Under the limit: one lookup per distinct credential, however often it is sent.
        for key in bogus_keys:
            for _ in range(4):
                assert (await with_key(h, key)).status_code == 401
        assert len(lookups) == len(bogus_keys)
        for token in bogus_cookies:
            for _ in range(3):
                assert (await with_cookie(h, token)).status_code == 401
        assert len(lookups) == len(bogus_keys) + len(bogus_cookies)
        # Malformed keys never cost a lookup; they count against the address too.
        for raw in ("not-a-key", key_format.generate()[:-1] + "!"):
            assert (await with_key(h, raw)).status_code == 401
        sent = 3 * 4 + 2 * 3 + 2
        for _ in range(IP_LIMIT - sent):
            assert (await h.client.get(KEYS)).status_code == 401
        before = len(lookups)

        # Over the limit: new bogus keys and cookies, repeated ones, anonymous calls: all
        # refused by the address's limit, with no lookup at all.
        for _ in range(10):
            assert_ip_limited(await with_key(h, key_format.generate()))
            assert_ip_limited(await with_cookie(h, key_format.generate()))
            assert_ip_limited(await with_key(h, bogus_keys[0]))
            assert_ip_limited(await with_cookie(h, bogus_cookies[0]))
            assert_ip_limited(await h.client.get(KEYS))
        assert len(lookups) == before


async def test_known_valid_keys_are_not_throttled_by_the_ip_limit(harness_factory: Any) -> None:
    h: Harness = await harness_factory(ip_rate_limit={"minute": IP_LIMIT})
    key = (await h.create_key(["keys:read"], tier="enterprise"))["key"]
    # Far more requests than the address may make anonymously, all from one address.
    for _ in range(3 * IP_LIMIT):
        response = await with_key(h, key)
        assert response.status_code == 200, response.text
        assert response.headers["ratelimit-policy"].startswith('"minute";q=6000')
    # None of it counted against the address: its whole quota is left.
    anonymous = await h.client.get(KEYS)
    assert anonymous.status_code == 401
    assert f'"minute";r={IP_LIMIT - 1};' in anonymous.headers["ratelimit"]

    # Exhaust the address with failures: the known key still works (no lookup needed), and
    # is never looked up again.
    for _ in range(IP_LIMIT):
        await with_key(h, key_format.generate())
    assert_ip_limited(await h.client.get(KEYS))
    with credential_lookups(h) as lookups:
        for _ in range(5):
            assert (await with_key(h, key)).status_code == 200
    assert lookups == []


async def test_a_valid_key_is_looked_up_while_the_address_is_under_its_limit(
    harness_factory: Any,
) -> None:
    h: Harness = await harness_factory(ip_rate_limit={"minute": IP_LIMIT})
    key = (await h.create_key(["keys:read"]))["key"]
    h.fc.key_cache.clear()
    with credential_lookups(h) as lookups:
        assert (await with_key(h, key)).status_code == 200
        assert (await with_key(h, key)).status_code == 200
    assert len(lookups) == 1
