"""Every date-time of a request, found in the OpenAPI document (``format: date-time``), so a
new one is covered without editing this file: a value that overflows once converted to UTC,
or a number (a negative one especially), is a 422 naming that field; a proper value is not
refused for it."""

from __future__ import annotations

from typing import Any

from conftest import Harness

OVERFLOWING = ("9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00")
NUMBERS_IN_QUERIES = ("-1", "-86400.5", "1700000000")
NUMBERS_IN_BODIES = (-1, -86400.5, 1700000000)
FINE = "2026-01-01T00:00:00Z"
PLACEHOLDER = "x"  # any path parameter: parameters are checked before anything is looked up
METHODS = ("get", "post", "put", "patch", "delete")


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = document["components"]["schemas"][name]
    return schema


def is_date_time(document: dict[str, Any], schema: dict[str, Any]) -> bool:
    schema = resolve(document, schema)
    if schema.get("format") == "date-time":
        return True
    return any(is_date_time(document, s) for s in schema.get("anyOf", []) + schema.get("oneOf", []))


def body_fields(
    document: dict[str, Any], schema: dict[str, Any], prefix: tuple[Any, ...] = (), depth: int = 0
) -> list[tuple[Any, ...]]:
    """Paths (keys and list indexes) of every date-time inside a request body schema."""
    schema = resolve(document, schema)
    if depth > 6:
        return []
    if prefix and is_date_time(document, schema):
        return [prefix]
    found: list[tuple[Any, ...]] = []
    for name, sub in (schema.get("properties") or {}).items():
        found += body_fields(document, sub, (*prefix, name), depth + 1)
    if "items" in schema:
        found += body_fields(document, schema["items"], (*prefix, 0), depth + 1)
    for sub in schema.get("anyOf", []) + schema.get("oneOf", []):
        if resolve(document, sub).get("type") != "null":
            found += body_fields(document, sub, prefix, depth + 1)
    return found


def place(path: tuple[Any, ...], value: Any) -> Any:
    """A body holding ``value`` at ``path`` and nothing else."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(head, int):
        return [place(rest, value)]
    return {head: place(rest, value)}


def fields_of(response: Any) -> list[str]:
    return [e["field"] for e in response.json().get("errors", [])]


async def targets(
    h: Harness,
) -> tuple[list[tuple[str, str, str]], list[tuple[str, str, tuple[Any, ...]]]]:
    """(method, path, name) of every date-time query parameter, and (method, path, field
    path) of every date-time in a JSON request body."""
    document = (await h.client.get("/openapi.json")).json()
    queries: list[tuple[str, str, str]] = []
    bodies: list[tuple[str, str, tuple[Any, ...]]] = []
    for route, item in document["paths"].items():
        for method in METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            path = "/".join(PLACEHOLDER if "{" in part else part for part in route.split("/"))
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "query" and is_date_time(document, parameter["schema"]):
                    queries.append((method, path, parameter["name"]))
            content = (operation.get("requestBody") or {}).get("content", {})
            if "application/json" in content:
                for field in body_fields(document, content["application/json"]["schema"]):
                    bodies.append((method, path, field))
    return queries, bodies


async def test_every_date_time_refuses_overflow_and_numbers(harness: Harness) -> None:
    h = harness
    queries, bodies = await targets(h)
    # The ones known today are among them (the enumeration itself works).
    assert ("get", "/api/v1/events", "since") in queries
    assert ("get", "/api/v1/audit-log", "until") in queries
    assert ("post", "/api/v1/events", ("time",)) in bodies
    assert ("post", "/api/v1/events/batch", ("events", 0, "time")) in bodies
    assert ("post", "/api/v1/keys", ("expires_at",)) in bodies

    for method, path, name in queries:
        for value in (*OVERFLOWING, *NUMBERS_IN_QUERIES):
            response = await h.client.request(method, path, params={name: value}, headers=h.auth())
            assert response.status_code == 422, (method, path, name, value, response.text)
            assert name in fields_of(response), (method, path, name, value, response.text)
        fine = await h.client.request(method, path, params={name: FINE}, headers=h.auth())
        assert fine.status_code != 500, fine.text
        assert fine.status_code != 422 or name not in fields_of(fine), (path, name, fine.text)

    for method, path, field in bodies:
        name = ".".join(str(part) for part in field)
        for value in (*OVERFLOWING, *NUMBERS_IN_BODIES):
            response = await h.client.request(
                method, path, json=place(field, value), headers=h.auth()
            )
            assert response.status_code == 422, (method, path, name, value, response.text)
            assert name in fields_of(response), (method, path, name, value, response.text)
        fine = await h.client.request(method, path, json=place(field, FINE), headers=h.auth())
        assert fine.status_code != 500, fine.text
        assert fine.status_code != 422 or name not in fields_of(fine), (path, name, fine.text)
