"""Forecourt's side of the frame protocol, on asyncio (the format is :mod:`forecourt_plugin._wire`).

A :class:`Channel` owns the two pipe ends of one worker: it writes call frames without
blocking the event loop and reads result frames, holding at most one frame in memory.

A frame's body comes from a process that runs plugin code: it is parsed by the service's codec
(:mod:`forecourt.codec`: nesting depth, 64-bit integers, valid Unicode), and a large one off
the event loop (:func:`adecode`), so a plugin's answer costs the loop no work in proportion
to its size.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from typing import Any

import orjson

from forecourt import codec
from forecourt_plugin._wire import HEADER, MAX_FRAME_BYTES, FrameError, decode_length

READ_CHUNK_BYTES = 256 * 1024
# A result frame wraps the output in one object ({"output": ...}): the output itself may nest
# as deep as the codec allows anywhere else.
FRAME_DEPTH_MARGIN = 1

__all__ = ["Channel", "FrameError", "InvalidFrame", "adecode", "decode", "encode"]


class InvalidFrame(FrameError):
    """A whole frame arrived, but its body is not JSON the service accepts."""


def encode(message: Any) -> bytes:
    """``message`` as one frame (``ValueError`` if it is over the size cap or not JSON)."""
    try:
        body = orjson.dumps(message)
    except TypeError:  # integers beyond 64 bits, which the standard library can write
        body = json.dumps(message, separators=(",", ":"), allow_nan=False).encode()
    if len(body) > MAX_FRAME_BYTES:
        raise ValueError(f"the message is {len(body)} bytes, over {MAX_FRAME_BYTES}")
    return HEADER.pack(len(body)) + body


def decode(body: bytes) -> Any:
    """The JSON value of a frame body; :class:`InvalidFrame` if it is not JSON the codec
    accepts (too deep, an integer past 64 bits, a lone surrogate, not UTF-8, not JSON).

    What the codec accepts, orjson parses too (valid Unicode, 64-bit integers), so a body
    that orjson parses, within the depth and without a float that could be an integer orjson
    did not keep, needs no second look. Anything else is the codec's to parse or refuse,
    with its message.
    """
    limit = codec.max_depth() + FRAME_DEPTH_MARGIN
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    else:
        if _plain(value, limit):
            return value
    try:
        return codec.loads(body, field="answer", max_depth=limit, max_bytes=MAX_FRAME_BYTES)
    except codec.InvalidJson as exc:
        raise InvalidFrame(exc.detail) from None


def _plain(value: Any, limit: int) -> bool:
    """Whether parsed JSON nests at most ``limit`` containers (as the codec counts: a scalar
    0, ``{"a": 1}`` 1) and holds no float the codec would re-read as an integer
    (:func:`forecourt.codec.may_be_big_integer`: one rule for both).

    Level by level, keeping only the containers themselves: no object is allocated per
    value, so walking millions of them starts no garbage collection.
    """
    level = [value]
    depth = 0
    while level:
        following: list[Any] = []
        for current in level:
            kind = type(current)
            if kind is dict:
                children: Any = current.values()
            elif kind is list:
                children = current
            elif kind is float:
                if codec.may_be_big_integer(current):
                    return False
                continue
            else:
                continue
            if depth >= limit:
                return False
            following.extend(children)
        level = following
        depth += 1
    return True


async def adecode(body: bytes) -> Any:
    """:func:`decode`, in the codec's bounded thread pool when the body is large."""
    if len(body) <= codec.OFFLOAD_BYTES:
        return decode(body)
    return await codec.run_in_pool(decode, body)


class Channel:
    """Frames to and from one worker over a pair of pipes (Forecourt's ends)."""

    def __init__(self, write_fd: int, read_fd: int) -> None:
        self._write_fd = write_fd
        self._read_fd = read_fd
        os.set_blocking(write_fd, False)
        os.set_blocking(read_fd, False)
        self._buffer = bytearray()

    async def send(self, message: Any) -> None:
        """Write one frame; ``BrokenPipeError`` if the worker is gone."""
        await self.send_bytes(encode(message))

    async def send_bytes(self, frame: bytes) -> None:
        """Write an encoded frame."""
        view = memoryview(frame)
        while view:
            try:
                view = view[os.write(self._write_fd, view) :]
            except BlockingIOError:
                await self._wait(self._write_fd, writing=True)

    async def receive(self) -> Any:
        """Read one frame and parse it (off the loop when large); ``None`` at a clean end of
        file, :class:`FrameError` otherwise (:class:`InvalidFrame`: its body was refused)."""
        body = await self.receive_body()
        return None if body is None else await adecode(body)

    async def receive_body(self) -> bytes | None:
        """Read one frame's body, unparsed; ``None`` at a clean end of file."""
        while True:
            if len(self._buffer) >= HEADER.size:
                length = decode_length(bytes(self._buffer[: HEADER.size]))
                end = HEADER.size + length
                if len(self._buffer) >= end:
                    with memoryview(self._buffer) as view:  # one copy of the body, not two
                        body = bytes(view[HEADER.size : end])
                    del self._buffer[:end]
                    return body
            try:
                chunk = os.read(self._read_fd, READ_CHUNK_BYTES)
            except BlockingIOError:
                await self._wait(self._read_fd, writing=False)
                continue
            if not chunk:
                if self._buffer:
                    raise FrameError("the worker closed its pipe inside a frame")
                return None
            self._buffer += chunk

    def close_writer(self) -> None:
        """Close the call pipe: an idle worker reads end of file and exits."""
        if self._write_fd >= 0:
            os.close(self._write_fd)
            self._write_fd = -1

    def close(self) -> None:
        """Close both ends."""
        self.close_writer()
        if self._read_fd >= 0:
            os.close(self._read_fd)
            self._read_fd = -1

    async def _wait(self, fd: int, *, writing: bool) -> None:
        if fd < 0:
            raise BrokenPipeError("the channel is closed")
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        add, remove = (
            (loop.add_writer, loop.remove_writer)
            if writing
            else (loop.add_reader, loop.remove_reader)
        )
        add(fd, wake)
        try:
            await ready
        finally:
            with contextlib.suppress(ValueError, OSError):
                remove(fd)
