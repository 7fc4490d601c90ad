"""The OpenAPI document and the answers it describes, checked directly (the fuzzer samples).

On SQLite and on PostgreSQL + Redis: every error an operation can answer is documented as an
RFC 9457 problem, a 405 lists every method of its path, and request numbers and booleans are
JSON Schema's (``225.0`` is an integer, ``0`` is not a boolean, ``false`` is not a number,
a negative number is not a time).
"""

from __future__ import annotations

from typing import Any

from conftest import Harness

PROBLEM = "application/problem+json"
PROBLEM_REF = "#/components/schemas/Problem"


async def _document(harness: Harness) -> dict[str, Any]:
    response = await harness.client.get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


async def test_errors_are_documented_problems(harness: Harness) -> None:
    document = await _document(harness)
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    assert "ValidationError" not in schemas
    assert schemas["Problem"]["required"] == ["type", "title", "status", "detail"]
    operations = [
        (method.upper(), path, operation)
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    ]
    assert len(operations) > 50
    for method, path, operation in operations:
        responses = operation["responses"]
        errors = {code: r for code, r in responses.items() if int(code) >= 400}
        for code, response in errors.items():
            assert list(response["content"]) == [PROBLEM], (method, path, code)
            assert response["content"][PROBLEM]["schema"] == {"$ref": PROBLEM_REF}
        if path.startswith("/api/"):
            assert "429" in responses, (method, path)
            assert "Retry-After" in responses["429"]["headers"]
        if operation.get("security"):
            assert {"401", "403"} <= set(responses), (method, path)
        if "{" in path:
            assert "404" in responses, (method, path)
        if "requestBody" in operation:
            assert {"413", "422"} <= set(responses), (method, path)
        if method in {"POST", "PUT", "PATCH", "DELETE"} and operation.get("security"):
            assert "409" in responses, (method, path)


async def test_public_and_guarded_operations(harness: Harness) -> None:
    document = await _document(harness)
    login = document["paths"]["/api/v1/auth/login"]["post"]
    assert "security" not in login
    assert "401" in login["responses"]
    assert "401" not in document["paths"]["/healthz"]["get"]["responses"]
    keys = document["paths"]["/api/v1/keys"]["post"]
    assert keys["security"] == [{"bearerAuth": []}]


async def test_scopes_windows_and_names_are_named(harness: Harness) -> None:
    schemas = (await _document(harness))["components"]["schemas"]
    create = schemas["KeyCreate"]["properties"]
    assert "keys:read" in create["scopes"]["items"]["enum"]
    assert "admin" in create["scopes"]["items"]["enum"]
    assert create["rate_limits"]["propertyNames"]["enum"][:2] == ["second", "minute"]
    assert "pattern" in schemas["EventTypeCreate"]["properties"]["name"]
    # Update fields that may not be null are not offered as nullable.
    timeout = schemas["EndpointUpdate"]["properties"]["timeout_s"]
    assert timeout["type"] == "number"
    assert timeout["maximum"] == 60.0


async def test_405_lists_every_method_of_the_path(harness: Harness) -> None:
    response = await harness.client.put("/api/v1/keys", headers=harness.auth())
    assert response.status_code == 405
    assert response.headers["content-type"] == PROBLEM
    assert response.headers["allow"] == "GET, POST"
    key = await harness.create_key(["keys:read"])
    response = await harness.client.put(f"/api/v1/keys/{key['id']}", headers=harness.auth())
    assert response.status_code == 405
    assert response.headers["allow"] == "DELETE, GET, PATCH"
    # A literal path is its own, not an instance of a parameter's path beside it.
    response = await harness.client.put("/api/v1/plugins/types", headers=harness.auth())
    assert response.status_code == 405
    assert response.headers["allow"] == "GET"
    response = await harness.client.put("/api/v1/events/batch", headers=harness.auth())
    assert response.headers["allow"] == "POST"


async def test_json_integers_booleans_and_times(harness: Harness) -> None:
    created = await harness.client.post(
        "/api/v1/keys",
        json={"name": "float limit", "scopes": ["keys:read"], "rate_limits": {"minute": 225.0}},
        headers=harness.auth(),
    )
    assert created.status_code == 201, created.text
    assert created.json()["rate_limits"] == {"minute": 225}
    key_id = created.json()["id"]

    for body in ({"grace_period_s": False}, {"grace_period_s": "60"}):
        response = await harness.client.post(
            f"/api/v1/keys/{key_id}/rotate", json=body, headers=harness.auth()
        )
        assert response.status_code == 422, (body, response.text)
        assert response.headers["content-type"] == PROBLEM
    for limits in ({"minute": True}, {"minute": "5"}):
        response = await harness.client.patch(
            f"/api/v1/keys/{key_id}", json={"rate_limits": limits}, headers=harness.auth()
        )
        assert response.status_code == 422, (limits, response.text)
    unchanged = await harness.client.get(f"/api/v1/keys/{key_id}", headers=harness.auth())
    assert unchanged.json()["rate_limits"] == {"minute": 225}

    for enabled in (0, 1, "true"):
        response = await harness.client.post(
            "/api/v1/webhooks",
            json={"url": "https://example.com/hook", "enabled": enabled},
            headers=harness.auth(),
        )
        assert response.status_code == 422, (enabled, response.text)
        assert response.json()["errors"][0]["field"] == "enabled"

    for since in ("-5", "-1.5"):
        response = await harness.client.get(
            "/api/v1/events", params={"since": since}, headers=harness.auth()
        )
        assert response.status_code == 422, (since, response.text)
