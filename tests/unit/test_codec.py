"""The JSON codec: what it accepts round-trips exactly; what it refuses is named by path."""

from __future__ import annotations

import json
import math
import threading
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from forecourt import codec
from forecourt.codec import InvalidJson

INTS = st.integers(min_value=codec.MIN_INT, max_value=codec.MAX_INT)
TEXT = st.text()  # hypothesis' text never holds a surrogate
SCALARS = st.none() | st.booleans() | INTS | st.floats(allow_nan=False, allow_infinity=False) | TEXT
JSON = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=40,
)


def nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


def depth_of(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    return 0


@given(JSON)
def test_accepted_values_round_trip_exactly(value: Any) -> None:
    codec.check(value, field="data")
    encoded = codec.dumps(value)
    decoded = codec.loads(encoded)
    assert codec.dumps(decoded) == encoded
    assert decoded == value or (isinstance(value, float) and math.isclose(decoded, value))


@given(JSON)
def test_stdlib_text_of_an_accepted_value_loads_the_same(value: Any) -> None:
    assert codec.loads(json.dumps(value)) == orjson.loads(orjson.dumps(value))


BIG = st.integers(min_value=codec.MAX_INT + 1) | st.integers(max_value=codec.MIN_INT - 1)


@given(BIG, st.data())
def test_integers_past_64_bits_are_refused_everywhere(number: int, data: st.DataObject) -> None:
    key = data.draw(st.from_regex(r"[a-z]{1,8}", fullmatch=True))
    value = {"outer": [0, {key: number}]}
    with pytest.raises(InvalidJson) as caught:
        codec.check(value, field="data")
    assert caught.value.field == f"data.outer[1].{key}"
    with pytest.raises(InvalidJson) as loaded:
        codec.loads(json.dumps(value))  # not silently read as a float
    assert loaded.value.field == f"body.outer[1].{key}"


@pytest.mark.parametrize("number", [codec.MIN_INT, codec.MAX_INT, 0, -1, 2**63])
def test_the_64_bit_bounds_are_accepted(number: int) -> None:
    codec.check(number, field="data")
    assert codec.loads(codec.dumps({"n": number})) == {"n": number}


def test_a_float_that_looks_like_a_big_integer_stays_a_float() -> None:
    assert codec.loads(b'{"a": 1.8446744073709552e+19}') == {"a": 1.8446744073709552e19}


@given(st.integers(min_value=1, max_value=200))
def test_depth_is_limited_exactly(depth: int) -> None:
    value = nested(depth)
    assert depth_of(value) == depth
    if depth <= codec.max_depth():
        codec.check(value, field="data")
        assert codec.loads(codec.dumps(value)) == value
    else:
        with pytest.raises(InvalidJson, match="nested deeper than 64"):
            codec.check(value, field="data")
        with pytest.raises(InvalidJson, match="nested deeper"):
            codec.loads(json.dumps(value))


def test_depth_far_past_any_recursion_limit_is_refused_not_crashed() -> None:
    text = "[" * 100_000 + "]" * 100_000
    with pytest.raises(InvalidJson, match="nested deeper"):
        codec.loads(text)
    deep: Any = 1
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(InvalidJson, match="nested deeper"):
        codec.check(deep, field="data")


def test_a_custom_depth_limit() -> None:
    with pytest.raises(InvalidJson):
        codec.check(nested(4), field="data", max_depth=3)
    codec.check(nested(3), field="data", max_depth=3)


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ("\ud800", "data"),
        ({"a": ["ok", "x\udfffy"]}, "data.a[1]"),
        ({"a": {"\ud800": 1}}, 'data.a["\\ud800"]'),
        ({"\udc00k": 1}, 'data["\\udc00k"]'),
    ],
)
def test_lone_surrogates_are_refused_in_values_and_keys(value: Any, field: str) -> None:
    with pytest.raises(InvalidJson) as caught:
        codec.check(value, field="data")
    assert caught.value.field == field
    orjson.dumps(caught.value.extra)  # the error itself can be written
    with pytest.raises(InvalidJson) as loaded:
        codec.loads(json.dumps(value))
    assert loaded.value.field == "body" + field.removeprefix("data")


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_refused(number: float) -> None:
    with pytest.raises(InvalidJson, match="not finite") as caught:
        codec.check({"x": [number]}, field="data")
    assert caught.value.field == "data.x[0]"
    with pytest.raises(InvalidJson, match="not finite"):
        codec.loads(json.dumps({"x": [number]}))
    with pytest.raises(InvalidJson, match="not finite"):
        codec.normalize({"x": (number,)})


@pytest.mark.parametrize("value", [{1: "a"}, {"a": {1, 2}}, {"a": object()}, b"bytes"])
def test_values_that_are_not_json_are_refused(value: Any) -> None:
    with pytest.raises(InvalidJson):
        codec.check(value, field="data")


def test_size_cap() -> None:
    value = {"a": "x" * 100}
    codec.check(value, field="data", max_bytes=200)
    with pytest.raises(InvalidJson, match="bytes"):
        codec.check(value, field="data", max_bytes=50)
    with pytest.raises(InvalidJson, match="bytes"):
        codec.loads(codec.dumps(value), max_bytes=50)


def test_invalid_syntax_is_refused() -> None:
    for text in [b"{", b"\xff", b"[1,]", b""]:
        with pytest.raises(InvalidJson, match="not valid JSON"):
            codec.loads(text)


def test_normalize_turns_python_values_into_json() -> None:
    assert codec.normalize({1: (1, 2), "s": "t"}) == {"1": [1, 2], "s": "t"}
    with pytest.raises(InvalidJson):
        codec.normalize({"a": 2**64})


@given(JSON)
def test_pydantic_type_accepts_what_check_accepts(value: Any) -> None:
    class Model(BaseModel):
        data: codec.JsonValue = None

    assert Model(data=value).data == value


def test_pydantic_type_names_the_path_inside_the_field() -> None:
    class Model(BaseModel):
        data: codec.JsonValue = None

    with pytest.raises(ValidationError) as caught:
        Model(data={"a": {"b": [0, 1, 2, 2**64]}})
    (error,) = caught.value.errors()
    assert error["type"] == codec.ERROR_TYPE
    assert error["loc"] == ("data",)
    assert error["ctx"]["path"] == ".a.b[3]"
    with pytest.raises(ValidationError):
        Model(data=nested(65))


async def test_large_documents_are_handled_off_the_event_loop() -> None:
    loop_thread = threading.get_ident()
    threads: list[int] = []
    real_walk = codec._walk

    def spy(*args: Any) -> bool:
        threads.append(threading.get_ident())
        return real_walk(*args)

    big = [{"n": i, "s": "x"} for i in range(codec.OFFLOAD_NODES)]
    codec._walk = spy  # type: ignore[assignment]
    try:
        await codec.acheck(big, field="data")
        assert threads[-1] != loop_thread
        threads.clear()
        await codec.acheck({"small": [1, 2]}, field="data")
        assert threads == [loop_thread]
        threads.clear()
        text = codec.dumps(big * 4)
        assert len(text) > codec.OFFLOAD_BYTES
        assert await codec.aloads(text) == big * 4
        assert threads[-1] != loop_thread
    finally:
        codec._walk = real_walk
    bad = [*big, {"n": 2**64}]
    with pytest.raises(InvalidJson) as caught:
        await codec.acheck(bad, field="data")
    assert caught.value.field == f"data[{len(big)}].n"


def test_stored_values_are_always_written_for_a_response() -> None:
    legacy = {"big": 2**70, "text": "\ud800", "deep": nested(300)}
    with pytest.raises(InvalidJson):
        codec.dumps(legacy)
    assert json.loads(codec.dumps_stored(legacy)) == legacy
    assert codec.dumps_stored({"a": 1}) == codec.dumps({"a": 1})
