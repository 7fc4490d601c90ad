"""Framing of the messages between Forecourt and a plugin worker.

A frame is a 4-byte big-endian length followed by that many bytes of UTF-8 JSON. Frames travel
on file descriptors of their own (a pipe pair for calls, a Unix socket for egress), never on
the plugin's stdout or stderr, so nothing a plugin prints can be read as a frame.

This module is imported inside the sandbox, so it uses the standard library only.
"""

from __future__ import annotations

import json
import os
import socket
import struct
from collections.abc import Callable
from typing import Any

HEADER = struct.Struct(">I")
MAX_FRAME_BYTES = 16 * 1024 * 1024  # the largest message either side accepts


class FrameError(Exception):
    """The peer sent something that is not a frame, or closed the channel mid-frame."""


def encode(message: Any) -> bytes:
    """``message`` as one frame: header and JSON body (``ValueError`` if it is too large)."""
    body = json.dumps(message, separators=(",", ":"), allow_nan=False).encode()
    if len(body) > MAX_FRAME_BYTES:
        raise ValueError(f"the message is {len(body)} bytes, over {MAX_FRAME_BYTES}")
    return HEADER.pack(len(body)) + body


def decode_length(header: bytes) -> int:
    """The body length announced by ``header``; ``FrameError`` if it is over the cap."""
    (length,) = HEADER.unpack(header)
    if length > MAX_FRAME_BYTES:
        raise FrameError(f"a frame of {length} bytes is over the cap of {MAX_FRAME_BYTES}")
    return int(length)


def decode_body(body: bytes) -> Any:
    """The JSON value in a frame body; ``FrameError`` if it is not JSON."""
    try:
        return json.loads(body)
    except ValueError as exc:
        raise FrameError(f"a frame is not JSON: {exc}") from None


def write_frame(fd: int, message: Any) -> None:
    """Write ``message`` as one frame to the blocking file descriptor ``fd``."""
    data = memoryview(encode(message))
    while data:
        written = os.write(fd, data)
        data = data[written:]


def read_frame(fd: int) -> Any:
    """Read one frame from the blocking file descriptor ``fd``.

    Returns ``None`` at a clean end of file (before any byte of a frame); raises
    :class:`FrameError` when the channel ends inside a frame.
    """
    return _read_frame(lambda size: os.read(fd, size))


def send_frame(sock: socket.socket, message: Any) -> None:
    """Send ``message`` as one frame on a connected stream socket (its timeout applies)."""
    sock.sendall(encode(message))


def recv_frame(sock: socket.socket) -> Any:
    """Receive one frame from a connected stream socket; ``None`` at a clean end of stream."""
    return _read_frame(sock.recv)


def _read_frame(read: Callable[[int], bytes]) -> Any:
    header = _read_exactly(read, HEADER.size, allow_eof=True)
    if header is None:
        return None
    body = _read_exactly(read, decode_length(header), allow_eof=False)
    assert body is not None
    return decode_body(body)


def _read_exactly(read: Callable[[int], bytes], size: int, *, allow_eof: bool) -> bytes | None:
    chunks: list[bytes] = []
    remaining = size
    while remaining:
        chunk = read(min(remaining, 1024 * 1024))
        if not chunk:
            if allow_eof and remaining == size:
                return None
            raise FrameError("the channel closed inside a frame")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)
