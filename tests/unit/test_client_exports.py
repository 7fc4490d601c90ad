"""forecourt.client's public surface: ``__all__`` is exactly what it exports, and the
exception classes form the tree drawn in the docstring of ``_exceptions.py``."""

from __future__ import annotations

import inspect
import re

import forecourt.client
from forecourt.client import _exceptions

# A line of the drawing: the tree prefix, then a class name, then what it means.
TREE_LINE = re.compile(r"^(?P<prefix>[ │├└─]*)(?P<name>[A-Za-z_]\w*)(?P<rest>.*)$")
BRANCH = ("├", "└")
STATUS = re.compile(r"\b([1-5]\d\d|5xx)\b")


def drawn_tree() -> list[tuple[int, str, str]]:
    """(depth, class name, the rest of the line) for each class in the drawing, in order.

    Branch lines hold ├ or └; the root is the line just above the first branch.
    """
    lines = [line for line in (_exceptions.__doc__ or "").splitlines() if line.strip()]
    first = next(i for i, line in enumerate(lines) if any(b in line for b in BRANCH))
    tree = [lines[first - 1], *(line for line in lines[first:] if any(b in line for b in BRANCH))]
    rows = []
    for line in tree:
        match = TREE_LINE.match(line)
        assert match, line
        assert hasattr(_exceptions, match["name"]), f"{match['name']} is drawn but not defined"
        rows.append((len(match["prefix"]), match["name"], match["rest"]))
    return rows


def parents(rows: list[tuple[int, str, str]]) -> dict[str, str | None]:
    """Each drawn class and the class it is drawn under (None for the root)."""
    result: dict[str, str | None] = {}
    stack: list[tuple[int, str]] = []
    for depth, name, _ in rows:
        while stack and stack[-1][0] >= depth:
            stack.pop()
        result[name] = stack[-1][1] if stack else None
        stack.append((depth, name))
    return result


def test_every_name_in_all_exists() -> None:
    names = forecourt.client.__all__
    assert len(names) == len(set(names))
    for name in names:
        assert hasattr(forecourt.client, name), name
    assert sorted(names) == list(names), "keep __all__ sorted"


def test_every_public_class_and_function_is_in_all() -> None:
    public = {
        name
        for name, value in vars(forecourt.client).items()
        if not name.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and value.__module__.startswith("forecourt.client")
    }
    assert public
    assert public <= set(forecourt.client.__all__), public - set(forecourt.client.__all__)
    # And __all__ holds nothing but classes and functions.
    for name in forecourt.client.__all__:
        value = getattr(forecourt.client, name)
        assert inspect.isclass(value) or inspect.isfunction(value), name


def test_the_client_and_its_verification_are_exported() -> None:
    for name in ("Client", "AsyncClient", "verify_webhook", "WebhookVerificationError"):
        assert name in forecourt.client.__all__


def test_every_exception_is_drawn_and_exported() -> None:
    drawn = {name for _, name, _ in drawn_tree()}
    defined = {
        name
        for name, value in vars(_exceptions).items()
        if inspect.isclass(value)
        and issubclass(value, BaseException)
        and value.__module__ == _exceptions.__name__
    }
    assert drawn == defined
    assert drawn <= set(forecourt.client.__all__)
    for name in drawn:
        assert getattr(forecourt.client, name) is getattr(_exceptions, name)


def test_each_exception_is_a_subclass_of_the_one_it_is_drawn_under() -> None:
    tree = parents(drawn_tree())
    roots = [name for name, parent in tree.items() if parent is None]
    assert roots == ["ForecourtClientError"]
    assert issubclass(_exceptions.ForecourtClientError, Exception)
    for name, parent in tree.items():
        if parent is None:
            continue
        cls, base = getattr(_exceptions, name), getattr(_exceptions, parent)
        assert issubclass(cls, base), f"{name} is drawn under {parent}"
        # Drawn directly under it: no other drawn class sits between them.
        assert base in cls.__mro__[1:]
        between = cls.__mro__[1 : cls.__mro__.index(base)]
        assert not [c for c in between if c.__name__ in tree], (name, between)
    # The drawing has the shape described: two branches under the root.
    assert tree["TransportError"] == "ForecourtClientError"
    assert tree["APIError"] == "ForecourtClientError"


def test_the_statuses_drawn_are_the_ones_mapped() -> None:
    for _, name, rest in drawn_tree():
        match = STATUS.search(rest)
        if match is None:
            continue
        status = 503 if match[1] == "5xx" else int(match[1])
        error = _exceptions.error_for(status, {"title": "t", "detail": "d"}, "7")
        assert type(error) is getattr(_exceptions, name), (status, name)
        assert error.status == status
    limited = _exceptions.error_for(429, {}, "7")
    assert isinstance(limited, _exceptions.RateLimitError)
    assert limited.retry_after == 7
    assert _exceptions.error_for(429, {}, None).retry_after is None  # type: ignore[attr-defined]
    invalid = _exceptions.error_for(422, {"errors": [{"field": "url", "message": "m"}]}, None)
    assert isinstance(invalid, _exceptions.ValidationError)
    assert invalid.errors == [{"field": "url", "message": "m"}]
    # A status the drawing does not name is still an APIError.
    assert type(_exceptions.error_for(418, {}, None)) is _exceptions.APIError
