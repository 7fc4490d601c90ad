"""Webhook secrets need ``webhooks:secrets``: reveal and rotate, the secret on create, and
unmasked header values, URL credentials and query strings. The audit log never holds them."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from conftest import Harness
from forecourt.webhooks.models import Endpoint
from forecourt.webhooks.service import mask_url

WEBHOOKS = "/api/v1/webhooks"
AUDIT = "/api/v1/audit-log"
LOOPBACK = "127.0.0.0/8"
TOKEN = "Bearer receiver-token-123"
QUERY = "sig=query-secret-456&x=1"
URL = f"http://127.0.0.1:9/in/hook?{QUERY}"
MASKED_URL = "http://127.0.0.1:9/in/hook?***"
SUPPLIED = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWY="


@pytest.fixture
async def wh(harness_factory: Any) -> Harness:
    h: Harness = await harness_factory(webhook_allow_private=LOOPBACK)
    return h


async def create(h: Harness, key: str | None = None, **fields: Any) -> dict[str, Any]:
    body = {"url": URL, "headers": {"Authorization": TOKEN, "X-Plain": "v"}, "enabled": False}
    response = await h.client.post(WEBHOOKS, json={**body, **fields}, headers=h.auth(key))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def stored_secret(h: Harness, endpoint_id: str) -> tuple[str, str | None]:
    async with h.fc.sessionmaker() as session:
        row = (
            await session.execute(
                select(Endpoint.secret_encrypted, Endpoint.previous_secret_encrypted).where(
                    Endpoint.id == endpoint_id
                )
            )
        ).one()
    return row[0], row[1]


def assert_masked(endpoint: dict[str, Any]) -> None:
    assert endpoint["url"] == MASKED_URL
    assert endpoint["headers"] == {"Authorization": "***", "X-Plain": "***"}


def assert_clear(endpoint: dict[str, Any]) -> None:
    assert endpoint["url"] == URL
    assert endpoint["headers"] == {"Authorization": TOKEN, "X-Plain": "v"}


async def test_without_the_scope_no_secret_and_everything_masked(wh: Harness) -> None:
    writer = (await wh.create_key(["webhooks:write"]))["key"]
    created = await create(wh, writer)
    assert created["secret"] is None
    assert_masked(created)
    endpoint_id = created["id"]
    path = f"{WEBHOOKS}/{endpoint_id}"
    assert_masked((await wh.client.get(path, headers=wh.auth(writer))).json())
    listed = (await wh.client.get(WEBHOOKS, headers=wh.auth(writer))).json()["items"]
    assert [e["id"] for e in listed] == [endpoint_id]
    assert_masked(listed[0])
    for action in ("disable", "enable"):
        response = await wh.client.post(f"{path}/{action}", headers=wh.auth(writer))
        assert_masked(response.json())
    response = await wh.client.patch(path, json={"description": "d"}, headers=wh.auth(writer))
    assert_masked(response.json())
    assert "receiver-token" not in response.text and "query-secret" not in response.text

    before = await stored_secret(wh, endpoint_id)
    for method, suffix in (("GET", "/secret"), ("POST", "/secret/rotate")):
        response = await wh.client.request(method, path + suffix, headers=wh.auth(writer))
        assert response.status_code == 403, response.text
        assert "webhooks:secrets" in response.json()["detail"]
    assert await stored_secret(wh, endpoint_id) == before

    # The owner key (admin implies webhooks:secrets) sees it all, and can reveal.
    assert_clear((await wh.client.get(path, headers=wh.auth())).json())
    revealed = await wh.client.get(f"{path}/secret", headers=wh.auth())
    assert revealed.status_code == 200, revealed.text
    assert revealed.json()["secret"].startswith("whsec_")


async def test_the_scope_alone_reveals_rotates_and_unmasks(wh: Harness) -> None:
    holder = (await wh.create_key(["webhooks:write", "webhooks:secrets"]))["key"]
    created = await create(wh, holder)
    assert created["secret"].startswith("whsec_")
    assert_clear(created)
    path = f"{WEBHOOKS}/{created['id']}"
    assert_clear((await wh.client.get(path, headers=wh.auth(holder))).json())
    revealed = await wh.client.get(f"{path}/secret", headers=wh.auth(holder))
    assert revealed.json()["secret"] == created["secret"]
    rotated = await wh.client.post(f"{path}/secret/rotate", headers=wh.auth(holder))
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["secret"] not in (None, created["secret"])


async def test_a_given_secret_is_never_echoed(wh: Harness) -> None:
    created = await create(wh, secret=SUPPLIED)
    assert created["secret"] is None
    path = f"{WEBHOOKS}/{created['id']}"
    other = SUPPLIED.replace("QUJD", "WFla")
    rotated = await wh.client.post(
        f"{path}/secret/rotate", json={"secret": other}, headers=wh.auth()
    )
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["secret"] is None
    revealed = await wh.client.get(f"{path}/secret", headers=wh.auth())
    assert revealed.json()["secret"] == other


async def test_users_reveal_by_role(wh: Harness) -> None:
    created = await create(wh)
    path = f"{WEBHOOKS}/{created['id']}"
    password = "correct horse battery"
    statuses = {}
    for role in ("admin", "member"):
        email = f"{role}@example.com"
        response = await wh.client.post(
            "/api/v1/users",
            json={"email": email, "password": password, "role": role},
            headers=wh.auth(),
        )
        assert response.status_code == 201, response.text
        login = await wh.client.post(
            "/api/v1/auth/login", json={"email": email, "password": password}
        )
        header = next(
            v for v in login.headers.get_list("set-cookie") if v.startswith("fc_session=")
        )
        cookie = header.split(";", 1)[0]
        got = await wh.client.get(path, headers={"Cookie": cookie})
        (assert_clear if role == "admin" else assert_masked)(got.json())
        statuses[role] = (
            await wh.client.get(f"{path}/secret", headers={"Cookie": cookie})
        ).status_code
    assert statuses == {"admin": 200, "member": 403}


async def test_the_audit_log_never_holds_header_values_or_url_secrets(wh: Harness) -> None:
    created = await create(wh)
    path = f"{WEBHOOKS}/{created['id']}"
    response = await wh.client.patch(
        path,
        json={"url": URL.replace("x=1", "x=2"), "headers": {"Authorization": "Bearer other-789"}},
        headers=wh.auth(),
    )
    assert response.status_code == 200, response.text
    assert (await wh.client.delete(path, headers=wh.auth())).status_code == 204
    response = await wh.client.get(
        AUDIT, params={"target_id": created["id"], "limit": 200}, headers=wh.auth()
    )
    entries = response.json()["items"]
    assert {e["action"] for e in entries} >= {
        "endpoint.created",
        "endpoint.updated",
        "endpoint.deleted",
    }
    for entry in entries:
        for summary in (entry["before"], entry["after"]):
            if summary and "url" in summary:
                assert summary["url"] == MASKED_URL
    for secret in ("receiver-token", "other-789", "query-secret", "x=2", "whsec_"):
        assert secret not in response.text


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("https://example.com/hook", "https://example.com/hook"),
        ("https://example.com:8443/a/b?t=1", "https://example.com:8443/a/b?***"),
        ("https://user:pw@example.com/h", "https://***@example.com/h"),
        ("https://user@example.com:1/h?q#frag", "https://***@example.com:1/h?***#***"),
        ("http://[::1]:8080/x?y=z", "http://[::1]:8080/x?***"),
        ("https://a@b@example.com/", "https://***@example.com/"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


async def test_a_masked_read_written_back_keeps_the_stored_values(wh: Harness) -> None:
    writer = (await wh.create_key(["webhooks:write"]))["key"]
    created = await create(wh)
    path = f"{WEBHOOKS}/{created['id']}"
    seen = (await wh.client.get(path, headers=wh.auth(writer))).json()
    assert_masked(seen)
    headers = {**seen["headers"], "X-Plain": "new"}
    response = await wh.client.patch(
        path, json={"url": seen["url"], "headers": headers}, headers=wh.auth(writer)
    )
    assert response.status_code == 200, response.text
    got = (await wh.client.get(path, headers=wh.auth())).json()
    assert got["url"] == URL
    assert got["headers"] == {"Authorization": TOKEN, "X-Plain": "new"}
