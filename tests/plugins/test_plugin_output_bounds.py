"""What a plugin returns cannot stall or break the service.

A plugin's answer is untrusted input of up to 16 MiB. It is parsed by the service's codec
(depth, 64-bit integers, valid Unicode) and checked against its type's contract in the answer
pool's processes, never in the server's (which gets the output back as encoded bytes and
answers with them), so the server keeps answering while a large output is handled, and an
answer the codec refuses fails the run (status ``error``, a clear message, an execution
record) instead of answering 500.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from plugin_support import SETTINGS, execute, executions, files, install, instance, start, zip_bytes

from forecourt import codec
from forecourt.plugins.contracts import TYPES, conforms
from forecourt.plugins.sandbox.protocol import (
    FRAME_DEPTH_MARGIN,
    MAX_FRAME_BYTES,
    InvalidFrame,
    decode,
)
from forecourt.plugins.schemas import ExecutionResult
from forecourt.settings import Settings
from served import serve

# A poll that takes this long means the event loop hung: generous, so a busy machine does not
# fail the test. That the server does no work in proportion to the output is checked
# structurally (no parse of it in the server's process); the latency /healthz keeps meanwhile
# is measured by bench/plugin_output.py.
POLL_TIMEOUT_S = 3.0
INLINE_PARSE_CAP_BYTES = 1024 * 1024  # far above any other document this test's server parses
RUN_TIMEOUT_S = 180.0
RECORD = '{"i":1000000,"s":"abcdefghijklm"}'  # about the size of each record returned
RECORDS = (MAX_FRAME_BYTES - 4096) // (len(RECORD) + 1)  # 16 MiB of records, frame included

CODE = '''
import os
import sys


def big(payload):
    count = payload["records"][0]["count"]
    return {"records": [{"i": 1000000 + i % 1000, "s": "abcdefghijklm"} for i in range(count)]}


def deep(payload):
    sys.setrecursionlimit(20000)  # so the worker itself can write it
    value = []
    for _ in range(3000):
        value = [value]
    return {"records": [{"v": value}]}


def surrogate(payload):
    return {"records": [{"s": "\\ud800"}]}


def huge(payload):
    return {"records": [{"n": 2**64}]}


PAD = "x" * 300_000  # makes an answer large enough to be read in the answer pool


def big_broken(payload):
    return {"records": [PAD]}


def big_surrogate(payload):
    return {"records": [{"pad": PAD, "s": "\\ud800"}]}


def big_huge(payload):
    return {"records": [{"pad": PAD, "n": -(2**63) - 1}]}


def big_hook(payload):
    events = [{"type": "alert.resolved", "data": {"n": n}} for n in range(2)]
    return {"events": events, "pad": PAD}


def garbage(payload):
    """Write a frame of bytes that are not JSON on the result pipe, as plugin code can."""
    body = b"\\xff\\xfe this is not JSON"
    os.write(int(sys.argv[4]), len(body).to_bytes(4, "big") + body)
    return {"records": []}


def garbage_deep(payload):
    """A raw frame nested 3,000 deep, which the worker's own encoder would not write (its
    depth is refused before its call id is looked at)."""
    body = b'{"type":"result","id":1,"status":"ok","output":'
    body += b"[" * 3000 + b"]" * 3000 + b"}"
    os.write(int(sys.argv[4]), len(body).to_bytes(4, "big") + body)
    return {"records": []}
'''


# -- the server stays responsive -------------------------------------------------------------


def counting(parse: Callable[..., Any], sizes: list[int]) -> Callable[..., Any]:
    """``parse``, noting the size of each document it is given."""

    def counted(data: Any, *args: Any, **kwargs: Any) -> Any:
        sizes.append(len(data))
        return parse(data, *args, **kwargs)

    return counted


def test_a_16_mib_output_leaves_healthz_answering(
    settings_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings: Settings = settings_factory(**SETTINGS, plugin_max_memory_mib=1024)
    # Every JSON parse in this process (the server runs in a thread of it; the answer pool's
    # processes are spawned, so they do not see this).
    parsed: list[int] = []
    monkeypatch.setattr(orjson, "loads", counting(orjson.loads, parsed))
    monkeypatch.setattr(json, "loads", counting(json.loads, parsed))
    with serve(settings) as served, httpx.Client(base_url=served.url, timeout=30) as client:
        package = zip_bytes(
            files(CODE, entry_point="plugin:big", resources={"memory_mib": 1024, "timeout_s": 120})
        )
        response = client.post(
            "/api/v1/plugins",
            files={"package": ("plugin.zip", package, "application/zip")},
            headers=served.auth(),
        )
        assert response.status_code == 201, response.text
        response = client.post(
            "/api/v1/plugin-instances",
            json={"plugin_id": "com.example.upper", "name": "big"},
            headers=served.auth(),
        )
        assert response.status_code == 201, response.text
        instance_id = response.json()["id"]

        answer: dict[str, httpx.Response] = {}

        def run() -> None:
            with httpx.Client(base_url=served.url, timeout=RUN_TIMEOUT_S) as runner:
                answer["run"] = runner.post(
                    f"/api/v1/plugin-instances/{instance_id}/execute",
                    json={"input": {"records": [{"count": RECORDS}]}},
                    headers=served.auth(),
                )

        running = threading.Thread(target=run, name="plugin-run")
        running.start()
        polls = stalls = 0
        with httpx.Client(base_url=served.url, timeout=POLL_TIMEOUT_S) as poller:
            while running.is_alive():
                try:
                    assert poller.get("/healthz").status_code == 200
                except httpx.TimeoutException:
                    stalls += 1
                polls += 1
                time.sleep(0.01)
        running.join()
        largest = max(parsed)  # before this test parses the answer itself

        assert largest < INLINE_PARSE_CAP_BYTES, f"the server parsed {largest} bytes of JSON"
        assert served.fc.plugin_runner.answers.answers_read == 1
        assert stalls == 0, f"{stalls} of {polls} polls of /healthz took over {POLL_TIMEOUT_S} s"
        assert polls > 10  # polled all along the run, not once at its end
        run_answer = answer["run"]
        assert run_answer.status_code == 200, run_answer.text[:2000]
        assert run_answer.headers["content-type"] == "application/json"
        body = run_answer.json()
        assert body["status"] == "ok", {k: v for k, v in body.items() if k != "output"}
        assert list(body) == list(ExecutionResult.model_fields)  # sent in pieces, same shape
        assert len(body["output"]["records"]) == RECORDS
        assert len(run_answer.content) > MAX_FRAME_BYTES - 64 * 1024  # the full 16 MiB
        listed = client.get(
            "/api/v1/plugins/com.example.upper/executions", headers=served.auth()
        ).json()["items"]
        assert [(e["id"], e["status"]) for e in listed] == [(body["id"], "ok")]


# -- answers the codec refuses ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("function", "message"),
    [
        ("deep", "nested deeper than"),
        ("surrogate", "lone surrogate"),
        ("huge", "outside the 64-bit range"),
        ("garbage", "is not valid JSON"),
        ("garbage_deep", "nested deeper than"),
    ],
)
async def test_an_answer_the_codec_refuses_fails_the_run_with_a_record(
    harness_factory: Any, function: str, message: str
) -> None:
    h = await start(harness_factory)
    await install(h, files(CODE, entry_point=f"plugin:{function}"))
    created = await instance(h)
    payload: dict[str, Any] = {"records": []}
    result = await execute(h, created["id"], payload)

    assert result["status"] == "error", result
    assert result["error_class"] == "InvalidOutput"
    assert message in result["error_message"]
    assert "Forecourt accepts" in result["error_message"]
    assert result["output"] is None
    records = await executions(h, "com.example.upper")
    assert [(r["id"], r["status"], r["error_class"]) for r in records] == [
        (result["id"], "error", "InvalidOutput")
    ]
    # The instance keeps working: the next call gets a fresh worker and a clean record.
    again = await h.client.post(
        f"/api/v1/plugin-instances/{created['id']}/execute",
        json={"input": payload},
        headers=h.auth(),
    )
    assert again.status_code == 200, again.text
    assert again.json()["status"] == "error"


@pytest.mark.parametrize(
    ("function", "error_class", "message"),
    [
        ("big_broken", "ContractViolation", "output.records[0]: "),
        ("big_surrogate", "InvalidOutput", "lone surrogate"),
        ("big_huge", "InvalidOutput", "outside the 64-bit range"),
    ],
)
async def test_a_large_answer_is_refused_in_the_pool_as_it_is_inline(
    harness_factory: Any, function: str, error_class: str, message: str
) -> None:
    h = await start(harness_factory)
    await install(h, files(CODE, entry_point=f"plugin:{function}"))
    created = await instance(h)

    result = await execute(h, created["id"], {"records": []})

    assert h.fc.plugin_runner.answers.answers_read == 1
    assert (result["status"], result["error_class"]) == ("error", error_class), result
    assert message in result["error_message"]
    assert result["output"] is None
    records = await executions(h, "com.example.upper")
    assert [(r["id"], r["status"], r["error_class"]) for r in records] == [
        (result["id"], "error", error_class)
    ]


async def test_a_large_output_read_in_the_pool_is_answered_whole(harness_factory: Any) -> None:
    h = await start(harness_factory)
    await install(
        h,
        files(
            CODE,
            type="hook",
            entry_point="plugin:big_hook",
            permissions={"events": ["alert.*"]},
            config_schema=None,
        ),
    )
    created = await instance(h, event_types=["alert.triggered"])
    event = {"specversion": "1.0", "id": "e1", "source": "/x", "type": "alert.triggered"}

    result = await execute(h, created["id"], {"event": event})

    assert h.fc.plugin_runner.answers.answers_read == 1
    assert result["status"] == "ok", result
    assert result["output"]["pad"] == "x" * 300_000
    assert [e["data"] for e in result["output"]["events"]] == [{"n": 0}, {"n": 1}]
    published = await h.client.get(
        "/api/v1/events", params={"type": "alert.resolved"}, headers=h.auth()
    )
    assert published.status_code == 200, published.text
    assert sorted(e["data"]["n"] for e in published.json()["items"]) == [0, 1]


# -- the fast contract check agrees with JSON Schema -----------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(
        st.sampled_from(["records", "spec", "$schema", "metrics", "name", "value", "labels",
                         "events", "type", "data", "sent", "media_type", "content", "encoding",
                         "columns", "rows", "x"]),
        children,
        max_size=4,
    ),
    max_leaves=12,
)  # fmt: skip


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(kind=st.sampled_from(sorted(TYPES)), value=JSON)
def test_the_fast_contract_check_never_passes_what_json_schema_refuses(
    kind: str, value: Any
) -> None:
    schema = TYPES[kind].output_schema
    if conforms(schema, value):
        assert list(Draft202012Validator(schema).iter_errors(value)) == []


# -- the fast frame decoder agrees with the codec --------------------------------------------

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text()
    | st.sampled_from(["\ud800", "a\udfffb"])
)
NESTED = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=20,
)


@pytest.mark.parametrize(
    "number",
    [
        b"-9223372036854775809",  # -2**63-1: read by orjson as the float -2**63
        b"-9223372036854775808",
        b"9223372036854775807",
        b"18446744073709551615",
        b"18446744073709551616",
        b"-18446744073709551616",
        b"1e19",
        b"-9.3e18",
        b"-9223372036854775808.0",
    ],
)
def test_a_number_at_the_64_bit_edges_is_decoded_as_the_codec_reads_it(number: bytes) -> None:
    body = b'{"output":' + number + b"}"
    limit = codec.max_depth() + FRAME_DEPTH_MARGIN
    try:
        expected = codec.loads(body, field="answer", max_depth=limit, max_bytes=MAX_FRAME_BYTES)
    except codec.InvalidJson:
        with pytest.raises(InvalidFrame, match="outside the 64-bit range"):
            decode(body)
    else:
        decoded = decode(body)
        assert decoded == expected
        assert type(decoded["output"]) is type(expected["output"])


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(value=NESTED, levels=st.sampled_from([0, 1, 60, 63, 64, 65, 66, 3000]))
def test_a_frame_is_refused_exactly_when_the_codec_refuses_it(value: Any, levels: int) -> None:
    inner = json.dumps(value).encode()  # lone surrogates escaped, as a worker writes them
    body = b'{"output":' + b"[" * levels + inner + b"]" * levels + b"}"
    limit = codec.max_depth() + FRAME_DEPTH_MARGIN
    try:
        expected = codec.loads(body, field="answer", max_depth=limit, max_bytes=MAX_FRAME_BYTES)
    except codec.InvalidJson:
        with pytest.raises(InvalidFrame):
            decode(body)
    else:
        assert decode(body) == expected
