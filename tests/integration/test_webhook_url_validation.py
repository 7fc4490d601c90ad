"""Webhook URLs through the API: an SSRF refusal says the address is not allowed, never what
an internal name resolves to; host names with invalid IDNA labels are a 422; nothing is
stored either way."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from conftest import Harness

WEBHOOKS = "/api/v1/webhooks"
INTERNAL = {"intranet.example": ["10.20.30.40"], "metadata.example": ["169.254.169.254"]}


class InternalDns:
    """Resolves a few names to internal addresses, like a split-horizon DNS would."""

    async def resolve(self, host: str, port: int) -> list[str]:
        if host in INTERNAL:
            return INTERNAL[host]
        raise OSError(f"{host} does not resolve")


async def endpoint_count(h: Harness) -> int:
    response = await h.client.get(WEBHOOKS, headers=h.auth())
    assert response.status_code == 200, response.text
    body = response.json()
    items = body["items"] if isinstance(body, dict) else body
    return len(items)


def assert_url_refused(response: Any) -> dict[str, Any]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert [e["field"] for e in body["errors"]] == ["url"]
    return body


@pytest.mark.parametrize("host", sorted(INTERNAL))
async def test_a_refusal_does_not_reveal_what_a_name_resolves_to(
    harness_factory: Any, host: str
) -> None:
    h: Harness = await harness_factory()
    h.fc.webhook_config = replace(h.fc.webhook_config, resolver=InternalDns())
    before = await endpoint_count(h)
    response = await h.client.post(
        WEBHOOKS, json={"url": f"https://{host}/hook", "event_types": []}, headers=h.auth()
    )
    body = assert_url_refused(response)
    text = response.text
    assert f"{host} resolves to an address that is not allowed" in body["detail"]
    for address in INTERNAL[host]:
        assert address not in text
    for kind in ("private", "link-local", "loopback"):
        assert kind not in text
    assert await endpoint_count(h) == before


async def test_a_literal_address_is_named_as_written(harness_factory: Any) -> None:
    h: Harness = await harness_factory()
    response = await h.client.post(
        WEBHOOKS, json={"url": "http://10.0.0.1/hook", "event_types": []}, headers=h.auth()
    )
    body = assert_url_refused(response)
    assert "10.0.0.1 is a private address" in body["detail"]


@pytest.mark.parametrize(
    "url",
    [
        "http://xn--a.example/",
        "http://xn--.example/hook",
        "https://XN--ZZ-.example/",
        "https://hooks.xn--n3h.example/",
        "https://\u2603.example/",
        "https://a..example/",
        "https://" + "a" * 64 + ".example/",
    ],
)
async def test_invalid_idna_host_names_are_a_422(harness_factory: Any, url: str) -> None:
    h: Harness = await harness_factory()
    before = await endpoint_count(h)
    response = await h.client.post(WEBHOOKS, json={"url": url, "event_types": []}, headers=h.auth())
    body = assert_url_refused(response)
    assert "host name" in body["detail"]
    assert await endpoint_count(h) == before


async def test_invalid_idna_on_update_is_a_422_and_changes_nothing(
    harness_factory: Any,
) -> None:
    h: Harness = await harness_factory(webhook_allow_private="127.0.0.0/8")
    created = await h.client.post(
        WEBHOOKS, json={"url": "http://127.0.0.1:9/hook", "event_types": []}, headers=h.auth()
    )
    assert created.status_code == 201, created.text
    path = f"{WEBHOOKS}/{created.json()['id']}"
    before = (await h.client.get(path, headers=h.auth())).json()
    response = await h.client.patch(path, json={"url": "http://xn--a.example/"}, headers=h.auth())
    assert_url_refused(response)
    assert (await h.client.get(path, headers=h.auth())).json() == before
