"""The one JSON codec of the service: requests, stored data, delivery bodies, responses and
plugin frames all go through it, so a value that one part accepts every other part can
store, encode and read back.

A JSON value is acceptable when, and only when:

- it is made of ``dict`` (with ``str`` keys), ``list`` (or ``tuple``), ``str``, ``int``,
  ``float``, ``bool`` and ``None``;
- it nests at most ``max_depth`` containers (default 64, ``FORECOURT_JSON_MAX_DEPTH``):
  a scalar has depth 0, ``{"a": 1}`` depth 1, ``{"a": [1]}`` depth 2;
- every integer is within 64 bits, signed or unsigned: from ``-2**63`` to ``2**64 - 1``
  (what orjson encodes; PostgreSQL's jsonb and SQLite hold them exactly). A bigger integer
  must be sent as a string;
- every float is finite (no NaN or infinity: JSON has no such number);
- every string, keys included, is valid Unicode text (no lone surrogate such as
  ``"\\ud800"``, which cannot be written as UTF-8);
- encoded, it is at most ``max_bytes`` long when the caller gives a size cap
  (``loads`` caps at ``DEFAULT_MAX_BYTES`` unless told otherwise).

API:

- ``check(value, *, field)`` raises ``InvalidJson`` (an ``errors.InvalidInput``: a 422
  problem) naming the path of the first offending part, e.g. ``data.a.b[3]``.
- ``dumps(value) -> bytes`` encodes a value that passed ``check`` (compact UTF-8; a value
  that cannot be encoded raises ``InvalidJson`` too). ``dumps_stored`` never refuses: for
  responses that show what storage holds.
- ``loads(data, *, field)`` parses bytes/str and refuses what ``check`` refuses (an integer
  past 64 bits is refused, not turned into a float).
- ``normalize(value, *, field)`` turns Python values (datetimes, tuples, UUIDs, integer
  keys, ...) into plain JSON values and checks them.
- ``acheck`` / ``aloads``: the same, for documents that may be large. Small ones are done
  inline; a document of more than ``OFFLOAD_NODES`` values (``acheck``) or ``OFFLOAD_BYTES``
  bytes (``aloads``) is handled in a thread pool of ``POOL_THREADS`` threads, so work
  proportional to untrusted input never holds the event loop for long. Request bodies are
  capped by ``FORECOURT_MAX_BODY_BYTES`` (1 MiB by default) and checked inline, on the event
  loop, by the pydantic type below: a walk over every value of the body (its cost at that
  size is not measured here).
- ``JsonValue``: the pydantic type for free JSON in request models (event ``data``, event
  type ``schema``, webhook ``metadata``, plugin config and input). A refusal is a 422 whose
  ``field`` is the model field followed by the path inside it (``data.a.b[3]``); see
  ``http.problems``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any, TypeVar

import orjson
from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

from forecourt.errors import InvalidInput

DEFAULT_MAX_DEPTH = 64
MIN_INT = -(2**63)
MAX_INT = 2**64 - 1
DEFAULT_MAX_BYTES = 64 * 1024 * 1024  # loads' size cap unless the caller gives one
OFFLOAD_BYTES = 256 * 1024  # aloads: bigger documents are parsed in the pool
OFFLOAD_NODES = 8_192  # acheck: values checked inline before the rest goes to the pool
POOL_THREADS = 2
MAX_KEY_SHOWN = 64  # characters of a key quoted in an error's path
# pydantic error type of a refused JsonValue; its ctx "path" is the path inside the field.
ERROR_TYPE = "json_value"

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")
_T = TypeVar("_T")


def _depth_from_env() -> int:
    try:
        depth = int(os.environ.get("FORECOURT_JSON_MAX_DEPTH", DEFAULT_MAX_DEPTH))
    except ValueError:
        return DEFAULT_MAX_DEPTH
    return depth if depth > 0 else DEFAULT_MAX_DEPTH


_max_depth = _depth_from_env()
_pool: ThreadPoolExecutor | None = None


class InvalidJson(InvalidInput):
    """The value is not JSON that the service can store."""

    def __init__(self, reason: str, *, field: str, path: str = "") -> None:
        self.reason = reason
        self.path = path  # inside ``field``: "" or ".a.b[3]"
        super().__init__(f"{field}{path}: {reason}", field=f"{field}{path}")


def configure(*, max_depth: int) -> None:
    """Set the nesting limit for the whole process (``Settings.json_max_depth``)."""
    global _max_depth
    if max_depth < 1:
        raise ValueError("max_depth is at least 1")
    _max_depth = max_depth


def max_depth() -> int:
    return _max_depth


# -- checking -----------------------------------------------------------------------------


def check(
    value: Any, *, field: str, max_depth: int | None = None, max_bytes: int | None = None
) -> None:
    """Raise ``InvalidJson`` naming the first part of ``value`` that is not acceptable JSON
    (see the module docstring); with ``max_bytes``, also when its encoding is longer."""
    _walk(value, field, _max_depth if max_depth is None else max_depth, None)
    if max_bytes is not None:
        size = len(dumps(value, field=field))
        if size > max_bytes:
            raise InvalidJson(f"is {size} bytes as JSON; the cap is {max_bytes}", field=field)


async def acheck(
    value: Any, *, field: str, max_depth: int | None = None, max_bytes: int | None = None
) -> None:
    """``check``, moved to the thread pool for a document of more than ``OFFLOAD_NODES``
    values."""
    depth = _max_depth if max_depth is None else max_depth
    if _walk(value, field, depth, OFFLOAD_NODES) and max_bytes is None:
        return
    await run_in_pool(check, value, field=field, max_depth=depth, max_bytes=max_bytes)


def _walk(value: Any, field: str, limit: int, budget: int | None) -> bool:
    """Check ``value``; False when ``budget`` values were seen before the end (unfinished)."""
    # Iterative: a Python recursion would fail on deep input before the limit could say so.
    # Each entry: (value, depth of the containers around it, parent entry's path, key).
    stack: list[tuple[Any, int, Any, Any]] = [(value, 0, None, None)]
    seen = 0
    while stack:
        item = stack.pop()
        current, depth, _, _ = item
        seen += 1
        if budget is not None and seen > budget:
            return False
        kind = type(current)
        if kind is str:
            if not current.isascii():
                _check_text(current, field, item)
        elif kind is int:
            if not MIN_INT <= current <= MAX_INT:
                raise InvalidJson(
                    "an integer outside the 64-bit range (-2**63 to 2**64-1); "
                    "send big numbers as strings",
                    field=field,
                    path=_path(item),
                )
        elif kind is dict:
            if depth >= limit:
                raise InvalidJson(
                    f"nested deeper than {limit} levels", field=field, path=_path(item)
                )
            for key, child in current.items():
                if type(key) is not str:
                    raise InvalidJson(
                        "an object key that is not a string", field=field, path=_path(item)
                    )
                if not key.isascii():
                    _check_text(key, field, item, key=True)
                stack.append((child, depth + 1, item, key))
        elif kind is list or kind is tuple:
            if depth >= limit:
                raise InvalidJson(
                    f"nested deeper than {limit} levels", field=field, path=_path(item)
                )
            stack.extend((child, depth + 1, item, i) for i, child in enumerate(current))
        elif kind is float:
            if current != current or current in (float("inf"), float("-inf")):
                raise InvalidJson(
                    "a number that is not finite (NaN or infinity)", field=field, path=_path(item)
                )
        elif current is None or kind is bool:
            pass
        elif isinstance(current, str | int | float | dict | list | tuple):
            # Subclasses (an IntEnum, an OrderedDict, ...): checked as their base type.
            base: Callable[[Any], Any] = next(
                b for b in (str, int, float, dict, list, tuple) if isinstance(current, b)
            )
            stack.append((base(current), depth, item[2], item[3]))
            seen -= 1
        else:
            raise InvalidJson(
                f"a {kind.__name__} is not a JSON value", field=field, path=_path(item)
            )
    return True


def _check_text(text: str, field: str, item: tuple[Any, ...], *, key: bool = False) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        what = "an object key" if key else "a string"
        path = _path(item) + (_step(text) if key else "")
        raise InvalidJson(
            f"{what} with a lone surrogate (not valid Unicode text)", field=field, path=path
        ) from None


def _path(item: tuple[Any, ...] | None) -> str:
    steps: list[str] = []
    while item is not None and item[2] is not None:
        steps.append(_step(item[3]))
        item = item[2]
    return "".join(reversed(steps))


def _step(key: Any) -> str:
    if isinstance(key, int):
        return f"[{key}]"
    text = str(key)
    if _IDENTIFIER.match(text) and len(text) <= MAX_KEY_SHOWN:
        return f".{text}"
    if len(text) > MAX_KEY_SHOWN:
        text = text[:MAX_KEY_SHOWN] + "..."
    # ASCII-escaped, so a lone surrogate in the key can be written in the error itself.
    return f"[{json.dumps(text, ensure_ascii=True)}]"


# -- encoding and decoding ----------------------------------------------------------------


def dumps(value: Any, *, field: str = "value", sort_keys: bool = False) -> bytes:
    """Compact UTF-8 JSON of a value that passed ``check``. orjson writes NaN as ``null``:
    values from outside are checked at the door, before they get here."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS if sort_keys else 0)
    except (orjson.JSONEncodeError, TypeError):
        check(value, field=field)  # names what is wrong
        raise InvalidJson("cannot be encoded as JSON", field=field) from None


def dumps_stored(value: Any, *, sort_keys: bool = False) -> bytes:
    """JSON of a value read back from storage, for a response: never refuses. A row written
    before the codec's limits (an integer past 64 bits, a lone surrogate, deep nesting) is
    written by the standard library instead (ASCII-escaped), so reading it never fails."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS if sort_keys else 0)
    except (orjson.JSONEncodeError, TypeError):
        return json.dumps(value, separators=(",", ":"), default=str, sort_keys=sort_keys).encode()


def loads_stored(data: bytes | bytearray | memoryview | str) -> Any:
    """JSON that Forecourt wrote itself (``dumps_stored``) read back: never refuses what
    that wrote, a row written before the codec's limits included (a big integer is read
    exactly, a lone surrogate or deep nesting as the standard library reads them)."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return _loads_stdlib(data)
    return _loads_stdlib(data) if _has_big_number(value) else value


def loads_like_stdlib(data: bytes) -> Any:
    """``json.loads(data)``, the same value or the same ``json.JSONDecodeError``, read by orjson
    where that gives the same: a document with a run of 19 or more digits (an integer literal
    past 64 bits, which orjson reads as a float) or one orjson refuses (``NaN``, a lone
    surrogate, a syntax error, whose position the standard library names) is read by the
    standard library."""
    if not _LONG_DIGITS.search(data):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    return json.loads(data)


_LONG_DIGITS = re.compile(rb"[0-9]{19}")


def loads(
    data: bytes | bytearray | memoryview | str,
    *,
    field: str = "body",
    max_depth: int | None = None,
    max_bytes: int | None = DEFAULT_MAX_BYTES,
) -> Any:
    """Parse JSON and refuse (``InvalidJson``) what ``check`` refuses, or a document longer
    than ``max_bytes``."""
    size = len(data.encode() if isinstance(data, str) else data)
    if max_bytes is not None and size > max_bytes:
        raise InvalidJson(f"is {size} bytes of JSON; the cap is {max_bytes}", field=field)
    depth = _max_depth if max_depth is None else max_depth
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        value = _loads_lenient(data, field)  # to name what is wrong, or refuse the syntax
    else:
        if _has_big_number(value):
            # orjson reads an integer past 64 bits as a float; the stdlib keeps it exact.
            value = _loads_lenient(data, field)
    _walk(value, field, depth, None)
    return value


async def aloads(
    data: bytes | bytearray | memoryview | str,
    *,
    field: str = "body",
    max_depth: int | None = None,
    max_bytes: int | None = DEFAULT_MAX_BYTES,
) -> Any:
    """``loads``, in the thread pool for more than ``OFFLOAD_BYTES`` bytes."""
    if len(data) <= OFFLOAD_BYTES:
        return loads(data, field=field, max_depth=max_depth, max_bytes=max_bytes)
    return await run_in_pool(loads, data, field=field, max_depth=max_depth, max_bytes=max_bytes)


def normalize(value: Any, *, field: str = "data") -> Any:
    """Plain JSON values from Python ones (datetimes as RFC 3339, tuples as lists, UUIDs,
    dataclasses, integer keys as strings ...), checked."""
    _refuse_non_finite(value, field)  # orjson would write them as null
    try:
        encoded = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    except (orjson.JSONEncodeError, TypeError):
        check(value, field=field)  # names what is wrong
        raise InvalidJson("cannot be encoded as JSON", field=field) from None
    result = orjson.loads(encoded)
    check(result, field=field)
    return result


def _refuse_non_finite(value: Any, field: str) -> None:
    stack = [value]
    while stack:
        current = stack.pop()
        if isinstance(current, float):
            if current != current or current in (float("inf"), float("-inf")):
                raise InvalidJson("a number that is not finite (NaN or infinity)", field=field)
        elif isinstance(current, dict):
            stack.extend(current.values())
        elif isinstance(current, list | tuple | set | frozenset):
            stack.extend(current)


def _loads_stdlib(data: bytes | bytearray | memoryview | str) -> Any:
    """The standard library's reading: integers of any size exact, lone surrogates kept."""
    text = data if isinstance(data, str) else bytes(data).decode("utf-8", "surrogatepass")
    return json.loads(text)


def _loads_lenient(data: bytes | bytearray | memoryview | str, field: str) -> Any:
    try:
        return _loads_stdlib(data)
    except RecursionError:
        raise InvalidJson(f"nested deeper than {_max_depth} levels", field=field) from None
    except ValueError as exc:
        raise InvalidJson(f"is not valid JSON ({exc})", field=field) from None


def may_be_big_integer(number: float) -> bool:
    """Whether a float orjson parsed could be an integer literal past 64 bits that it did
    not keep (such a document is re-read exactly before it is checked). Rounded to a double,
    -2**63-1 reads as -2**63: anything this big counts."""
    return number.is_integer() and abs(number) >= 2**63


def _has_big_number(value: Any) -> bool:
    """Whether a float of ``value`` could be an integer literal orjson did not keep."""
    stack = [value]
    while stack:
        current = stack.pop()
        kind = type(current)
        if kind is float:
            if may_be_big_integer(current):
                return True
        elif kind is dict:
            stack.extend(current.values())
        elif kind is list:
            stack.extend(current)
    return False


# -- the thread pool ----------------------------------------------------------------------


async def run_in_pool(function: Callable[..., _T], /, *args: Any, **kwargs: Any) -> _T:
    """Run ``function`` in the codec's bounded thread pool (``POOL_THREADS`` threads; more
    calls wait their turn)."""
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(POOL_THREADS, thread_name_prefix="forecourt-json")
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_pool, lambda: function(*args, **kwargs))


# -- pydantic -----------------------------------------------------------------------------


def _validate(value: Any) -> Any:
    try:
        _walk(value, "", _max_depth, None)
    except InvalidJson as exc:
        raise PydanticCustomError(
            ERROR_TYPE,
            "{reason}" + (" at {path}" if exc.path else ""),
            {"reason": exc.reason, "path": exc.path},
        ) from None
    return value


JsonValue = Annotated[Any, AfterValidator(_validate)]
"""Any JSON value the codec accepts; a refusal is a 422 naming the path inside the field."""

JsonObject = Annotated[dict[str, Any], AfterValidator(_validate)]
"""A JSON object the codec accepts."""
