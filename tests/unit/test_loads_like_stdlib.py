"""Request bodies are read by orjson only where it gives what the standard library gives."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from forecourt.codec import loads_like_stdlib

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=30,
)


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down (1 is not 1.0 here)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


@given(JSON_VALUES)
def test_any_document_reads_as_the_standard_library_reads_it(value: Any) -> None:
    for text in (json.dumps(value), json.dumps(value, ensure_ascii=False, indent=1)):
        data = text.encode()
        assert same(loads_like_stdlib(data), json.loads(data))


@pytest.mark.parametrize(
    "text",
    [
        "18446744073709551616",  # 2**64: an int, not orjson's float
        "[-9223372036854775809, 1]",
        '{"v": 123456789012345678901234567890}',
        "NaN",
        "[Infinity, -Infinity]",
        '"\\ud800"',  # a lone surrogate
        '{"a": 1, "a": 2}',
        "1e400",
    ],
)
def test_what_orjson_reads_otherwise_is_read_by_the_standard_library(text: str) -> None:
    assert same(loads_like_stdlib(text.encode()), json.loads(text))


@pytest.mark.parametrize("text", ["", "{", '{"a": }', "[1,]", "tru", '{"a" 1}'])
def test_bad_json_raises_what_the_standard_library_raises(text: str) -> None:
    with pytest.raises(json.JSONDecodeError) as ours:
        loads_like_stdlib(text.encode())
    with pytest.raises(json.JSONDecodeError) as theirs:
        json.loads(text.encode())
    assert (ours.value.msg, ours.value.pos) == (theirs.value.msg, theirs.value.pos)
