"""The OpenAPI document: every status an operation can answer, derived from what it depends on.

FastAPI documents an operation's success status and, when it reads parameters, a 422 whose
body is its own ``HTTPValidationError`` as ``application/json``. Forecourt answers every
error as an RFC 9457 problem (``application/problem+json``, see ``http.problems``), and for
more reasons than invalid parameters. This module rewrites the document once, centrally, so
a new route gets its statuses without declaring them:

- behind the access layer (every path but ``middleware.access.EXCLUDED_PREFIXES``): 429;
- a scope check (``deps.require``) or any caller (``deps.current_principal``): 401 and 403,
  and the operation names the bearer scheme in ``security``;
- a path parameter: 404 (nothing of that id in the caller's tenant);
- query, header or path parameters, or a body: 422 (``errors`` names each field);
- a body: 400 (a body that cannot be parsed at all, e.g. a broken multipart) and 413;
- a write (POST, PUT, PATCH, DELETE): 409 (already exists, or a state that forbids it).

A route declares any other status in its decorator's ``responses``; a declared error status
keeps its description and gets the problem body.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute, iter_route_contexts

from forecourt.http.guard import caller_requirement
from forecourt.http.middleware.access import EXCLUDED_PREFIXES
from forecourt.http.problems import PROBLEM_MEDIA_TYPE

PROBLEM_SCHEMA_NAME = "Problem"
SCHEMA_REF = "#/components/schemas/"
# A request body's text without U+0000, for a text field that no pattern, format or list of
# values already describes.
NO_NUL_PATTERN = "^[^\\x00]*$"
# Python's whitespace (what str.strip removes), spelled out: JSON Schema's class is ECMA-262's.
_SPACE = "\\t-\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000"
NOT_BLANK_PATTERN = f"^[^\\x00]*[^\\x00{_SPACE}][^\\x00]*$"
_TEXT_IS_NAMED = frozenset({"pattern", "format", "enum", "const"})
# Keys whose value maps names to schemas (a property may be called "type" or "default").
_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "$defs", "definitions"})
SECURITY_SCHEME = "bearerAuth"
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# FastAPI's own error shapes, which no Forecourt response has.
FASTAPI_ERROR_SCHEMAS = ("HTTPValidationError", "ValidationError")

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": PROBLEM_SCHEMA_NAME,
    "description": "An RFC 9457 problem: what went wrong, for people and for programs.",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "description": "urn:forecourt:problem:<slug>"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "instance": {"type": "string", "description": "The request's path."},
        "errors": {
            "type": "array",
            "description": "Each field that is not acceptable (422).",
            "items": {
                "type": "object",
                "required": ["field", "message"],
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
    "additionalProperties": True,
}

DESCRIPTIONS: dict[int, str] = {
    400: "The request cannot be parsed.",
    401: "No valid API key or session.",
    403: "The credentials do not grant this (a scope, or a session write without its CSRF token).",
    404: "Nothing of that id in the caller's tenant.",
    405: "The path does not take this method; `Allow` lists those it takes.",
    409: "It already exists, or its current state does not allow this.",
    413: "The request body is over the configured cap.",
    422: "A parameter or a field of the body is not acceptable; `errors` names each.",
    429: "A rate-limit window is exhausted; retry after `Retry-After` seconds.",
    500: "Something went wrong on our side; it has been logged.",
    503: "A service this needs is unavailable.",
}

RETRY_AFTER_HEADER: dict[str, Any] = {
    "description": "Seconds until the exhausted window has room again.",
    "schema": {"type": "integer", "minimum": 0},
}


def install(app: FastAPI) -> None:
    """Serve the rewritten document at ``app.openapi_url``; built once, on first request."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def build(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document with Forecourt's error statuses, problem bodies and security."""
    document = get_openapi(
        title=app.title,
        version=app.version,
        openapi_version=app.openapi_version,
        description=app.description,
        routes=app.routes,
        tags=app.openapi_tags,
        servers=app.servers,
    )
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name in FASTAPI_ERROR_SCHEMAS:
        schemas.pop(name, None)
    schemas[PROBLEM_SCHEMA_NAME] = PROBLEM_SCHEMA
    components["securitySchemes"] = {
        SECURITY_SCHEME: {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key: `Authorization: Bearer <api key>`.",
        }
    }
    paths: dict[str, Any] = document.get("paths", {})
    # Included routers nest their routes; FastAPI's contexts see each route as mounted.
    for route in iter_route_contexts(app.routes):
        if not isinstance(route.original_route, APIRoute) or not route.include_in_schema:
            continue
        path: str = route.path_format or ""
        dependant: Dependant = route.dependant
        operations = paths.get(path, {})
        authenticated, _ = caller_requirement(dependant)
        for method in route.methods or ():
            operation = operations.get(method.lower())
            if operation is None:
                continue
            responses: dict[str, Any] = operation.setdefault("responses", {})
            for status in sorted(error_statuses(path, dependant, method, authenticated)):
                responses.setdefault(str(status), {})
            for key, response in responses.items():
                if key.isdigit() and int(key) >= 400:
                    responses[key] = _problem_response(int(key), response)
            if authenticated:
                operation["security"] = [{SECURITY_SCHEME: []}]
    _no_nul_in_bodies(document)
    return document


def _no_nul_in_bodies(document: dict[str, Any]) -> None:
    """Request bodies' text cannot hold U+0000 and is stripped (``schemas.StrictModel``)."""
    schemas: dict[str, Any] = document.get("components", {}).get("schemas", {})
    seen: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                visit(item)
            return
        if not isinstance(node, dict):
            return
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(SCHEMA_REF):
            name = ref.removeprefix(SCHEMA_REF)
            if name not in seen and name in schemas:
                seen.add(name)
                visit(schemas[name])
            return
        _constraints_as_keywords(node)
        if "default" in node and node["default"] is None and not _takes_null(node):
            # An absent field that may not be sent as null (``SkipJsonSchema[None]``).
            del node["default"]
        if node.get("type") == "string" and not _TEXT_IS_NAMED.intersection(node):
            # Text is stripped before its length is checked: a required one is not blank.
            blank_refused = node.get("minLength", 0) >= 1
            node["pattern"] = NOT_BLANK_PATTERN if blank_refused else NO_NUL_PATTERN
        for key, value in node.items():
            if key in _SCHEMA_MAPS and isinstance(value, dict):
                for schema in value.values():
                    visit(schema)
            elif key not in {"examples", "example", "default", "enum", "const"}:
                visit(value)

    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            if isinstance(operation, dict):
                visit(operation.get("requestBody", {}).get("content", {}))


def error_statuses(path: str, dependant: Dependant, method: str, authenticated: bool) -> set[int]:
    """The error statuses ``method`` on ``path`` can answer, from what it depends on."""
    statuses: set[int] = set()
    if not path.startswith(EXCLUDED_PREFIXES):
        statuses.add(429)
    if authenticated:
        statuses |= {401, 403}
    has_path = _any(dependant, lambda d: bool(d.path_params))
    if has_path:
        statuses.add(404)
    has_body = _any(dependant, lambda d: bool(d.body_params))
    if has_body or _any(dependant, lambda d: bool(d.query_params or d.header_params)):
        statuses.add(422)
    if has_path and _path_is_constrained(dependant):
        statuses.add(422)
    if has_body:
        statuses |= {400, 413}
    if method.upper() in WRITE_METHODS:
        statuses.add(409)
    return statuses


def _problem_response(status: int, declared: dict[str, Any]) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": declared.get("description") or DESCRIPTIONS.get(status, "An error."),
        "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": SCHEMA_REF + PROBLEM_SCHEMA_NAME}}},
    }
    headers = dict(declared.get("headers") or {})
    if status == 429:
        headers.setdefault("Retry-After", RETRY_AFTER_HEADER)
    if headers:
        response["headers"] = headers
    return response


# Pydantic writes a field's constraints under their own names when the field's type is a
# union it cannot attach them to (``float | SkipJsonSchema[None]``), and a list's length as
# a string's: JSON Schema's keywords instead.
_NUMBER_KEYWORDS = {
    "gt": "exclusiveMinimum",
    "ge": "minimum",
    "lt": "exclusiveMaximum",
    "le": "maximum",
}
_ARRAY_KEYWORDS = {"minLength": "minItems", "maxLength": "maxItems"}


def _constraints_as_keywords(node: dict[str, Any]) -> None:
    if node.get("type") in {"number", "integer"}:
        for name, keyword in _NUMBER_KEYWORDS.items():
            if name in node:
                node[keyword] = node.pop(name)
    if node.get("type") == "array":
        for name, keyword in _ARRAY_KEYWORDS.items():
            if name in node:
                node[keyword] = node.pop(name)


def _takes_null(node: dict[str, Any]) -> bool:
    branches = [node, *node.get("anyOf", []), *node.get("oneOf", [])]
    return any(
        b.get("type") == "null" or (isinstance(b.get("type"), list) and "null" in b["type"])
        for b in branches
        if isinstance(b, dict)
    ) or not any(key in node for key in ("type", "anyOf", "oneOf", "$ref", "allOf"))


def _path_is_constrained(dependant: Dependant) -> bool:
    """Whether a path parameter has a type or bound the router does not check by matching."""
    for sub in _walk(dependant):
        for param in sub.path_params:
            info = param.field_info
            if info.annotation is not str or info.metadata:
                return True
    return False


def _any(dependant: Dependant, predicate: Any) -> bool:
    return any(predicate(sub) for sub in _walk(dependant))


def _walk(dependant: Dependant) -> Iterator[Dependant]:
    yield dependant
    for sub in dependant.dependencies:
        yield from _walk(sub)
