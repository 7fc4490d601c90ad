from __future__ import annotations

from conftest import Harness


async def test_owner_key_lists_keys(harness: Harness) -> None:
    response = await harness.client.get("/api/v1/keys", headers=harness.auth())
    assert response.status_code == 200
    assert [k["name"] for k in response.json()["items"]] == ["owner"]
