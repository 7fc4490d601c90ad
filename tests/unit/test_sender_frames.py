"""The frames between the delivery worker and its sender processes survive any chunking of the
pipe: every request and result comes out whole, in order, once."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from forecourt.webhooks.sender import SendResult
from forecourt.webhooks.sender_process import (
    FLUSH_FRAMES,
    FrameParser,
    FrameWriter,
    decode_request,
    decode_result,
    encode_request,
    encode_result,
)

requests = st.lists(
    st.tuples(
        st.text(min_size=1, max_size=40),  # URL: any text, newlines included
        st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=4),
        st.floats(min_value=0.1, max_value=60),
        st.binary(max_size=300),  # a body may hold newlines and nothing at all
    ),
    max_size=12,
)
results = st.lists(
    st.builds(
        SendResult,
        status_code=st.none() | st.integers(100, 599),
        duration_ms=st.integers(0, 60_000),
        response_excerpt=st.none() | st.text(max_size=50),
        error_class=st.none() | st.sampled_from(["timeout", "connection"]),
        error_message=st.none() | st.text(max_size=50),
        retry_after_s=st.none() | st.floats(0, 3600),
    ),
    max_size=12,
)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(cut, len(data)) for cut in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


@given(requests, st.lists(st.integers(0, 5_000), max_size=30))
def test_requests_come_out_whole_however_the_pipe_cuts_them(
    sent: list[tuple[str, dict[str, str], float, bytes]], cuts: list[int]
) -> None:
    stream = b"".join(
        encode_request(seq, url, headers, timeout_s, body)
        for seq, (url, headers, timeout_s, body) in enumerate(sent)
    )
    parser = FrameParser(bodies=True)
    got = []
    for chunk in chunked(stream, cuts):
        for header, body in parser.feed(chunk):
            seq, url, headers, timeout_s, length = decode_request(header)
            assert length == len(body)
            got.append((seq, url, headers, timeout_s, body))
    assert got == [(seq, *request) for seq, request in enumerate(sent)]


@given(results, st.lists(st.integers(0, 5_000), max_size=30))
def test_results_come_out_whole_however_the_pipe_cuts_them(
    sent: list[SendResult], cuts: list[int]
) -> None:
    stream = b"".join(encode_result(seq, result) for seq, result in enumerate(sent))
    parser = FrameParser(bodies=False)
    frames = [frame for chunk in chunked(stream, cuts) for frame in parser.feed(chunk)]
    got = [decode_result(header) for header, _ in frames]
    assert got == list(enumerate(sent))


def test_a_header_line_beyond_the_limit_is_refused() -> None:
    parser = FrameParser(bodies=False, max_line=64)
    assert parser.feed(b"[1]\n" + b"x" * 40) == [([1], b"")]
    with pytest.raises(ValueError, match="too long"):
        parser.feed(b"y" * 40)


class _Pipe:
    """A write transport that keeps each write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return False


async def test_the_writer_sends_a_turns_frames_together_and_a_long_turn_in_parts() -> None:
    pipe = _Pipe()
    writer = FrameWriter(pipe)  # type: ignore[arg-type]
    frames = [f"frame {i}\n".encode() for i in range(2 * FLUSH_FRAMES + 5)]
    for frame in frames[:3]:
        writer.write(frame)
    assert pipe.writes == []  # held until the end of the turn
    await asyncio.sleep(0)
    assert pipe.writes == [b"".join(frames[:3])]

    pipe.writes.clear()
    for frame in frames:
        writer.write(frame)
    # The first parts go out at once, without waiting for the turn to end.
    assert pipe.writes == [
        b"".join(frames[:FLUSH_FRAMES]),
        b"".join(frames[FLUSH_FRAMES : 2 * FLUSH_FRAMES]),
    ]
    await asyncio.sleep(0)
    assert b"".join(pipe.writes) == b"".join(frames)
    assert len(pipe.writes) == 3
