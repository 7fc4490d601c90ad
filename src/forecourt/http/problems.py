"""Every error as an RFC 9457 ``application/problem+json`` response; never a stack trace."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import iter_route_contexts
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match

from forecourt import codec
from forecourt.errors import ForecourtError

log = logging.getLogger("forecourt.http")

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "urn:forecourt:problem:"


def problem(
    status: int,
    title: str,
    detail: str,
    slug: str,
    *,
    instance: str | None = None,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> Response:
    body: dict[str, Any] = {
        "type": TYPE_BASE + slug,
        "title": title,
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    body.update(extra)
    return Response(
        # Never refuses: a lone surrogate of the request named in a field is ASCII-escaped.
        codec.dumps_stored(body),
        status_code=status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=dict(headers or {}),
    )


def from_error(
    exc: ForecourtError, instance: str | None = None, headers: Mapping[str, str] | None = None
) -> Response:
    merged = {**exc.headers, **(headers or {})}
    return problem(
        exc.status, exc.title, exc.detail, exc.slug, instance=instance, headers=merged, **exc.extra
    )


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in {"body", "query", "path", "header", "cookie"} and len(parts) > 1:
        parts = parts[1:]
    return ".".join(parts) or "body"


async def _forecourt_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ForecourtError)
    return from_error(exc, request.url.path)


def _without_null_branches(errors: Sequence[Any]) -> list[Any]:
    """A field that also takes null is a union to pydantic: a refused value is reported once
    per branch, each loc naming its branch (``name.constrained-str``,
    ``name.function-after[...]``, ``name.none``). Report the value's own errors at the field,
    and drop the "must be null" one: the value is what is wrong, not that it is not null."""
    null_fields = {
        tuple(e.get("loc", ()))[:-1]
        for e in errors
        if e.get("type") == "none_required" and e.get("loc")
    }
    result = []
    for error in errors:
        loc = tuple(error.get("loc", ()))
        if error.get("type") == "none_required" and loc[:-1] in null_fields and len(errors) > 1:
            continue
        for field in null_fields:
            if len(loc) > len(field) and loc[: len(field)] == field:
                loc = (*field, *loc[len(field) + 1 :])
                break
        result.append({**error, "loc": loc})
    return result


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {
            # A JSON syntax error's loc ends in a character offset, which names no field.
            "field": "body"
            if e.get("type") == "json_invalid"
            # A refused free-JSON value: its loc names the field, ctx the path inside it.
            else _field(e["loc"]) + (e.get("ctx") or {}).get("path", "")
            if e.get("type") == codec.ERROR_TYPE
            else _field(e["loc"]),
            "message": e.get("msg", "invalid"),
        }
        for e in _without_null_branches(exc.errors())
    ]
    if any(e.get("type") == "json_invalid" for e in exc.errors()):
        detail = "The body is not valid JSON."
    else:
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return problem(
        422, "Invalid input", detail, "invalid-input", instance=request.url.path, errors=errors
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    titles = {404: "Not found", 405: "Method not allowed"}
    title = titles.get(exc.status_code, "HTTP error")
    detail = exc.detail if isinstance(exc.detail, str) else title
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"Nothing at {request.url.path}."
    slug = title.lower().replace(" ", "-")
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        # The router names only the methods of the first route on this path.
        headers["Allow"] = ", ".join(_allowed_methods(request))
    return problem(exc.status_code, title, detail, slug, instance=request.url.path, headers=headers)


def _allowed_methods(request: Request) -> list[str]:
    """The methods of the path the request names (as the document lists them)."""
    scope = {**request.scope, "method": "GET"}
    by_path: dict[str, set[str]] = {}
    # Included routers nest their routes; FastAPI's contexts see each route as mounted.
    for route in iter_route_contexts(request.app.router.routes):
        route_methods = route.methods
        if route_methods and route.matches(scope)[0] is not Match.NONE:
            by_path.setdefault(route.path_format or "", set()).update(route_methods)
    # /plugins/types is its own path, not /plugins/{plugin_id}: the fewest parameters win.
    for path in sorted(by_path, key=lambda path: path.count("{")):
        return sorted(by_path[path])
    return []


# SQLSTATEs that a request's own text causes: the database cannot hold a character of it
# (character_not_in_repertoire, untranslatable_character).
_UNSTORABLE_TEXT = frozenset({"22021", "22P05"})


async def _database_error(request: Request, exc: Exception) -> Response:
    """A value the database cannot take is the request's fault; anything else is ours."""
    assert isinstance(exc, DBAPIError)
    if getattr(exc.orig, "sqlstate", None) not in _UNSTORABLE_TEXT:
        return await _unhandled(request, exc)
    what = "U+0000 or another character this database cannot hold"
    return problem(
        422,
        "Invalid input",
        f"A text value of the request contains {what}.",
        "invalid-input",
        instance=request.url.path,
        errors=[{"field": "request", "message": f"contains {what}"}],
    )


async def _unhandled(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem(
        500,
        "Internal error",
        "Something went wrong on our side; it has been logged.",
        "internal",
        instance=request.url.path,
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(ForecourtError, _forecourt_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(DBAPIError, _database_error)
    app.add_exception_handler(Exception, _unhandled)
