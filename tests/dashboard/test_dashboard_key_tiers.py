"""GET /api/v1/keys/tiers: the tiers the create-key dialog offers."""

from __future__ import annotations

from typing import Any

from conftest import Harness, problem

CUSTOM_TIERS = {"small": {"minute": 5}, "large": {"minute": 500, "day": 9000}}


async def test_tiers_lists_the_configured_tiers_and_the_default(harness_factory: Any) -> None:
    harness: Harness = await harness_factory(rate_limit_tiers=CUSTOM_TIERS, default_tier="small")
    response = await harness.client.get("/api/v1/keys/tiers", headers=harness.auth())
    assert response.status_code == 200, response.text
    assert response.json() == {
        "default": "small",
        "items": [
            {"name": "small", "limits": {"minute": 5}},
            {"name": "large", "limits": {"minute": 500, "day": 9000}},
        ],
    }


async def test_tiers_needs_keys_read(harness: Harness) -> None:
    problem(await harness.client.get("/api/v1/keys/tiers"), 401, "unauthenticated")
    other = await harness.create_key(["events:read"])
    problem(
        await harness.client.get("/api/v1/keys/tiers", headers=harness.auth(other["key"])),
        403,
        "forbidden",
    )
    reader = await harness.create_key(["keys:read"])
    response = await harness.client.get("/api/v1/keys/tiers", headers=harness.auth(reader["key"]))
    assert response.status_code == 200
    assert [t["name"] for t in response.json()["items"]] == ["free", "pro", "enterprise"]


async def test_tiers_is_in_the_openapi_document(harness: Harness) -> None:
    document = (await harness.client.get("/openapi.json")).json()
    operation = document["paths"]["/api/v1/keys/tiers"]["get"]
    assert "200" in operation["responses"]
    assert "TiersOut" in document["components"]["schemas"]
