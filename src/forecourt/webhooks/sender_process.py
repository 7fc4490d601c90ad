"""A sender process: makes the HTTP exchanges of webhook deliveries for the worker that
started it, on a core of its own.

Run as ``python -m forecourt.webhooks.sender_process CONFIG`` by ``SenderPool``; it talks
over its stdin and stdout and nothing else. The signing, the queue and the recording stay with
the worker: this process gets a URL, headers and a signed body, POSTs them through the same
``Sender`` as the worker would (the SSRF guard included) and answers with the ``SendResult``.

Frames, in both directions: one line of JSON, then (requests only) the body's bytes::

    request  [seq, url, headers, timeout_s, body_length] \\n <body>
    result   [seq, status_code, duration_ms, excerpt, error_class, error_message, retry_after_s]

The first line written is ``["ready"]``. When stdin closes (the worker closed the pool, or
died) the process stops at once, whatever is in flight: the worker either has its answers
already or makes those attempts again, as at-least-once delivery allows. It dies with its
parent (``PR_SET_PDEATHSIG``) and ignores the terminal's SIGINT and SIGTERM, which are the
parent's to act on.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

import orjson

from forecourt import runtime
from forecourt.webhooks import ssrf
from forecourt.webhooks.sender import Sender, SendResult

READY = b'["ready"]\n'
MAX_HEADER_LINE_BYTES = 1 << 20  # the JSON line of a request: URL and headers
READ_CHUNK_BYTES = 1 << 16
FLUSH_FRAMES = 32  # frames written at once at the latest, so the other side starts early
PR_SET_PDEATHSIG = 1


def encode_request(
    seq: int, url: str, headers: dict[str, str], timeout_s: float, body: bytes
) -> bytes:
    return orjson.dumps([seq, url, headers, timeout_s, len(body)]) + b"\n" + body


def decode_request(header: Sequence[Any]) -> tuple[int, str, dict[str, str], float, int]:
    """A request's parsed header line: ``(seq, url, headers, timeout_s, body_length)``."""
    seq, url, headers, timeout_s, length = header
    return seq, url, headers, timeout_s, length


class FrameParser:
    """Splits what a pipe delivers, in chunks of any size, into frames: header lines (parsed,
    once), each followed by its body when ``bodies`` (the body's length is the header's last
    item).

    Reading a chunk at a time and parsing every frame in it costs one wait on the pipe per
    chunk instead of two per frame.
    """

    def __init__(self, *, bodies: bool, max_line: int = MAX_HEADER_LINE_BYTES) -> None:
        self._bodies = bodies
        self._max_line = max_line
        self._buffer = bytearray()
        self._header: list[Any] | None = None  # a request's header, waiting for its body
        self._length = 0

    def feed(self, data: bytes) -> list[tuple[list[Any], bytes]]:
        """The frames completed by ``data``, as ``(parsed header line, body)``; ValueError for
        a header line longer than ``max_line``."""
        buffer = self._buffer
        buffer += data
        frames: list[tuple[list[Any], bytes]] = []
        start = 0
        while True:
            if self._header is not None:
                end = start + self._length
                if len(buffer) < end:
                    break
                frames.append((self._header, bytes(buffer[start:end])))
                self._header = None
                start = end
                continue
            newline = buffer.find(b"\n", start)
            if newline < 0:
                if len(buffer) - start > self._max_line:
                    raise ValueError("a frame's header line is too long")
                break
            header = orjson.loads(buffer[start:newline])
            start = newline + 1
            if self._bodies:
                self._header, self._length = header, int(header[-1])
            else:
                frames.append((header, b""))
        del buffer[:start]
        return frames


def encode_result(seq: int, result: SendResult) -> bytes:
    return (
        orjson.dumps(
            [
                seq,
                result.status_code,
                result.duration_ms,
                result.response_excerpt,
                result.error_class,
                result.error_message,
                result.retry_after_s,
            ]
        )
        + b"\n"
    )


def decode_result(header: Sequence[Any]) -> tuple[int, SendResult]:
    """A result's parsed line: its request's ``seq`` and the ``SendResult``."""
    seq, status, duration_ms, excerpt, error_class, error_message, retry_after_s = header
    return seq, SendResult(status, duration_ms, excerpt, error_class, error_message, retry_after_s)


class FrameWriter:
    """Frames for a pipe, written together once per turn of the event loop (one system call
    for all the frames of that turn), or every ``FLUSH_FRAMES`` frames: when a turn starts
    hundreds of deliveries, the other process gets to work on the first of them while the
    rest are being signed."""

    def __init__(self, transport: asyncio.WriteTransport) -> None:
        self._transport = transport
        self._pending: list[bytes] = []
        self._loop = asyncio.get_running_loop()
        self._scheduled = False  # a flush at the end of this turn is due

    def write(self, frame: bytes) -> None:
        self._pending.append(frame)
        if len(self._pending) >= FLUSH_FRAMES:
            self._write_pending()
        elif not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        self._write_pending()

    def _write_pending(self) -> None:
        frames, self._pending = self._pending, []
        if frames and not self._transport.is_closing():
            self._transport.write(b"".join(frames))


async def serve(config: dict[str, Any]) -> None:
    """Answer requests from stdin until it closes."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_HEADER_LINE_BYTES)
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(0, "rb", buffering=0)
    )
    transport, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(1, "wb", buffering=0))
    output = FrameWriter(transport)
    sender = Sender(
        ssrf.AllowPolicy.from_setting(config["allow_private"]),
        concurrency=config["concurrency"],
        limit_per_host=config["limit_per_host"],
    )
    tasks: set[asyncio.Task[None]] = set()

    async def exchange(
        seq: int, url: str, headers: dict[str, str], timeout_s: float, body: bytes
    ) -> None:
        output.write(encode_result(seq, await sender.send(url, body, headers, timeout_s)))

    parser = FrameParser(bodies=True)
    runtime.settle()
    transport.write(READY)
    try:
        while True:
            try:
                chunk = await reader.read(READ_CHUNK_BYTES)
            except ConnectionError:
                break
            if not chunk:
                break
            for header, body in parser.feed(chunk):
                seq, url, headers, timeout_s, _ = decode_request(header)
                task = asyncio.create_task(exchange(seq, url, headers, timeout_s, body))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
    finally:
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await sender.aclose()
        transport.close()


def _die_with_parent(parent: int) -> None:
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return
    libc = ctypes.CDLL(libc_name, use_errno=True)
    with contextlib.suppress(AttributeError):
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(0)


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    config = orjson.loads(args[0])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with_parent(int(config["parent"]))
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(config))
    else:
        uvloop.run(serve(config))


if __name__ == "__main__":
    main()
