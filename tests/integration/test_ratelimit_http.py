"""Rate limiting over HTTP: the headers, 429s, per-key and per-IP buckets, concurrency."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx

from conftest import Harness

KEYS = "/api/v1/keys"
PROBLEM = "application/problem+json"
POLICY_ITEM = re.compile(r'^"([a-z]+)";q=(\d+);w=(\d+)$')
RATELIMIT = re.compile(r'^"([a-z]+)";r=(\d+);t=(\d+)$')
FREE_POLICY = '"minute";q=60;w=60, "hour";q=1000;w=3600, "day";q=10000;w=86400'
HEADER_NAMES = (
    "ratelimit-policy",
    "ratelimit",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "retry-after",
)


def policy_of(response: httpx.Response) -> dict[str, tuple[int, int]]:
    """``RateLimit-Policy`` as {window name: (quota, seconds)}, in header order."""
    result = {}
    for item in response.headers["ratelimit-policy"].split(", "):
        match = POLICY_ITEM.match(item)
        assert match, item
        result[match[1]] = (int(match[2]), int(match[3]))
    return result


def limit_of(response: httpx.Response) -> tuple[str, int, int]:
    """``RateLimit`` as (window name, remaining, reset seconds), checked against the
    ``RateLimit-Policy`` and ``X-RateLimit-*`` headers of the same response."""
    match = RATELIMIT.match(response.headers["ratelimit"])
    assert match, response.headers["ratelimit"]
    name, remaining, reset = match[1], int(match[2]), int(match[3])
    policy = policy_of(response)
    assert name in policy
    quota, seconds = policy[name]
    assert response.headers["x-ratelimit-limit"] == str(quota)
    assert response.headers["x-ratelimit-remaining"] == str(remaining)
    assert response.headers["x-ratelimit-reset"] == str(reset)
    assert 0 <= remaining <= quota
    assert 0 <= reset <= 2 * seconds
    return name, remaining, reset


def assert_rate_limited(response: httpx.Response, policy: str, limit: int) -> int:
    """A 429 problem naming the violated window; its Retry-After."""
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == PROBLEM
    retry_after = response.headers["retry-after"]
    assert retry_after.isdigit(), retry_after
    seconds = int(retry_after)
    assert seconds >= 1
    body = response.json()
    assert body["type"] == "urn:forecourt:problem:rate-limited"
    assert body["status"] == 429
    assert body["policy"] == policy
    assert body["limit"] == limit
    assert limit_of(response) == (policy, 0, seconds)
    return seconds


async def get(harness: Harness, key: str | None, path: str = KEYS) -> httpx.Response:
    headers = harness.auth(key) if key else {}
    return await harness.client.get(path, headers=headers)


async def test_headers_on_every_limited_response(harness: Harness) -> None:
    reader = (await harness.create_key(["keys:read"]))["key"]

    first = await get(harness, reader)
    assert first.status_code == 200
    assert first.headers["ratelimit-policy"] == FREE_POLICY
    assert list(policy_of(first)) == ["minute", "hour", "day"]
    name, remaining, reset = limit_of(first)
    assert (name, remaining) == ("minute", 59)
    assert 1 <= reset <= 60
    assert "retry-after" not in first.headers

    # Errors are limited responses too, and each one counts.
    forbidden = await harness.client.post(
        KEYS, json={"name": "x", "scopes": ["keys:read"]}, headers=harness.auth(reader)
    )
    assert forbidden.status_code == 403
    assert limit_of(forbidden)[:2] == ("minute", 58)
    missing = await get(harness, reader, "/api/v1/no-such-thing")
    assert missing.status_code == 404
    assert limit_of(missing)[:2] == ("minute", 57)
    invalid = await harness.client.get(KEYS, params={"limit": 0}, headers=harness.auth(reader))
    assert invalid.status_code == 422
    assert limit_of(invalid)[:2] == ("minute", 56)

    # The owner key is on its own tier.
    owner = await get(harness, harness.owner_key)
    assert policy_of(owner) == {
        "minute": (6000, 60),
        "hour": (200_000, 3600),
        "day": (2_000_000, 86_400),
    }
    # Without credentials, the per-IP policy applies.
    anonymous = await get(harness, None)
    assert anonymous.status_code == 401
    assert anonymous.headers["ratelimit-policy"] == '"minute";q=120;w=60'
    assert limit_of(anonymous)[:2] == ("minute", 119)


async def test_the_request_over_the_limit_is_429(harness: Harness) -> None:
    created = await harness.create_key(["keys:read"], rate_limits={"minute": 3})
    assert created["tier"] == "free"
    raw = created["key"]
    for expected in (2, 1, 0):
        response = await get(harness, raw)
        assert response.status_code == 200
        assert policy_of(response)["minute"] == (3, 60)
        assert policy_of(response)["hour"] == (1000, 3600)
        assert limit_of(response)[:2] == ("minute", expected)

    denied = await get(harness, raw)
    retry_after = assert_rate_limited(denied, "minute", 3)
    assert retry_after <= 120
    assert denied.json()["window_s"] == 60
    assert denied.headers["ratelimit-policy"] == (
        '"minute";q=3;w=60, "hour";q=1000;w=3600, "day";q=10000;w=86400'
    )
    assert_rate_limited(await get(harness, raw), "minute", 3)

    # Denials are counted in the key's usage, as rate-limited 4xx.
    usage = await harness.client.get(f"{KEYS}/{created['id']}/usage", headers=harness.auth())
    totals = usage.json()["totals_30d"]
    assert totals["requests"] == 5
    assert totals["status_2xx"] == 3
    assert totals["status_4xx"] == 2
    assert totals["rate_limited"] == 2


async def test_a_denied_request_consumes_no_window(harness: Harness) -> None:
    created = await harness.create_key(["keys:read"], rate_limits={"minute": 3, "hour": 5})
    raw = created["key"]
    for _ in range(3):
        assert (await get(harness, raw)).status_code == 200
    for _ in range(3):
        assert_rate_limited(await get(harness, raw), "minute", 3)

    # Lift the minute limit: the hour window must have counted only the 3 admitted requests.
    response = await harness.client.patch(
        f"{KEYS}/{created['id']}",
        json={"rate_limits": {"minute": 100, "hour": 5}},
        headers=harness.auth(),
    )
    assert response.status_code == 200, response.text
    allowed = await get(harness, raw)
    assert allowed.status_code == 200
    assert limit_of(allowed)[:2] == ("hour", 1)
    assert (await get(harness, raw)).status_code == 200
    assert_rate_limited(await get(harness, raw), "hour", 5)


async def test_excluded_paths_carry_no_rate_limit(harness: Harness) -> None:
    raw = (await harness.create_key(["keys:read"], rate_limits={"minute": 2}))["key"]
    for path in ("/healthz", "/readyz", "/docs", "/openapi.json", "/metrics"):
        for key in (raw, None, "fck_live_garbage"):
            for _ in range(3):
                response = await get(harness, key, path)
                assert response.status_code == 200, (path, response.text)
                present = [h for h in HEADER_NAMES if h in response.headers]
                assert present == [], (path, present)
    # None of that was charged to the key.
    response = await get(harness, raw)
    assert response.status_code == 200
    assert limit_of(response)[:2] == ("minute", 1)


async def test_unauthenticated_requests_get_the_per_ip_limit(harness_factory: Any) -> None:
    harness: Harness = await harness_factory(ip_rate_limit={"minute": 2})
    # A known (cached) key never counts against its address; one not yet known is looked up
    # only while the address is under its limit (see test_ip_limit_first.py).
    assert (await get(harness, harness.owner_key)).status_code == 200
    first = await get(harness, None)
    second = await get(harness, "fck_live_not-a-real-key")
    assert first.status_code == second.status_code == 401
    assert first.headers["ratelimit-policy"] == '"minute";q=2;w=60'
    assert limit_of(first)[:2] == ("minute", 1)
    assert limit_of(second)[:2] == ("minute", 0)

    assert_rate_limited(await get(harness, None), "minute", 2)
    # An invalid key is no key: it shares the IP's bucket.
    assert_rate_limited(await get(harness, "fck_live_not-a-real-key"), "minute", 2)
    # A valid key has a bucket of its own.
    owner = await get(harness, harness.owner_key)
    assert owner.status_code == 200
    assert policy_of(owner)["minute"] == (6000, 60)


async def test_keys_have_independent_limits(harness: Harness) -> None:
    a = await harness.create_key(["keys:read"], rate_limits={"minute": 2})
    b = await harness.create_key(["keys:read"], rate_limits={"minute": 2})
    for _ in range(2):
        assert (await get(harness, a["key"])).status_code == 200
    assert_rate_limited(await get(harness, a["key"]), "minute", 2)

    response = await get(harness, b["key"])
    assert response.status_code == 200
    assert limit_of(response)[:2] == ("minute", 1)
    assert (await get(harness, b["key"])).status_code == 200
    assert_rate_limited(await get(harness, b["key"]), "minute", 2)
    assert (await get(harness, harness.owner_key)).status_code == 200


async def test_rotation_does_not_reset_the_quota(harness: Harness) -> None:
    created = await harness.create_key(["keys:read"], rate_limits={"minute": 2})
    for _ in range(2):
        assert (await get(harness, created["key"])).status_code == 200
    response = await harness.client.post(
        f"{KEYS}/{created['id']}/rotate", json={"grace_period_s": 60}, headers=harness.auth()
    )
    assert response.status_code == 200
    assert_rate_limited(await get(harness, response.json()["key"]), "minute", 2)
    assert_rate_limited(await get(harness, created["key"]), "minute", 2)


async def test_concurrent_requests_never_overdraw(harness: Harness) -> None:
    raw = (await harness.create_key(["keys:read"], rate_limits={"minute": 10}))["key"]
    responses = await asyncio.gather(*(get(harness, raw) for _ in range(30)))
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 10, statuses
    assert statuses.count(429) == 20, statuses
    remaining = sorted(limit_of(r)[1] for r in responses if r.status_code == 200)
    assert remaining == list(range(10))
