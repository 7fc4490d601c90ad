"""Forecourt's side of the frame protocol, on asyncio (the format is :mod:`forecourt_plugin._wire`).

A :class:`Channel` owns the two pipe ends of one worker: it writes call frames without
blocking the event loop and reads result frames, holding at most one frame in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from typing import Any

import orjson

from forecourt_plugin._wire import HEADER, MAX_FRAME_BYTES, FrameError, decode_length

READ_CHUNK_BYTES = 256 * 1024

__all__ = ["Channel", "FrameError", "encode"]


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
    """The JSON value of a frame body; :class:`FrameError` if it is not JSON."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(body)  # integers beyond 64 bits
    except ValueError as exc:
        raise FrameError(f"a frame is not JSON: {exc}") from None


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
        """Read one frame; ``None`` at a clean end of file, :class:`FrameError` otherwise."""
        while True:
            if len(self._buffer) >= HEADER.size:
                length = decode_length(bytes(self._buffer[: HEADER.size]))
                end = HEADER.size + length
                if len(self._buffer) >= end:
                    body = bytes(self._buffer[HEADER.size : end])
                    del self._buffer[:end]
                    return decode(body)
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
