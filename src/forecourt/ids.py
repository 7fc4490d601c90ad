"""Resource identifiers: a type prefix and a time-ordered, random suffix.

``key_01JD3X...`` sorts by creation time, so ids double as pagination cursors.
"""

from __future__ import annotations

import os
import time

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_TIME_CHARS = 10  # 48-bit millisecond timestamp
_RANDOM_CHARS = 16  # 80 random bits


# Every pair of digits, indexed by the 10 bits it encodes: half the steps of one at a time.
_PAIRS = [high + low for high in _CROCKFORD for low in _CROCKFORD]


def _encode(value: int, length: int) -> str:
    """``value`` as ``length`` (even) digits, most significant first."""
    out = []
    for _ in range(length // 2):
        out.append(_PAIRS[value & 1023])
        value >>= 10
    return "".join(reversed(out))


def new_id(prefix: str) -> str:
    """A new identifier such as ``key_01JD3XQ7M4K2Z8W9Y6V5T4S3R2``."""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    return f"{prefix}_{_encode(millis, _TIME_CHARS)}{_encode(rand, _RANDOM_CHARS)}"
