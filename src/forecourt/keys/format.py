"""The API key format: ``fck_live_`` + 30 base62 characters of randomness + a 6-character
base62 CRC32 checksum of what precedes it.

30 base62 characters carry 178 bits. The checksum lets a secret scanner (or our own
middleware) recognise a real key offline and reject a mistyped one before any lookup.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import zlib

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
RANDOM_CHARS = 30
CHECKSUM_CHARS = 6
DISPLAY_PREFIX_CHARS = 13  # "fck_live_" and the first four random characters
ENVIRONMENTS = ("live", "test")
KEY_RE = re.compile(
    rf"^fck_(live|test)_([0-9A-Za-z]{{{RANDOM_CHARS}}})([0-9A-Za-z]{{{CHECKSUM_CHARS}}})$"
)


def _base62(value: int, width: int) -> str:
    chars = []
    for _ in range(width):
        value, rem = divmod(value, 62)
        chars.append(BASE62[rem])
    return "".join(reversed(chars))


def checksum(body: str) -> str:
    """The 6-character base62 CRC32 of ``body`` (``fck_live_`` + the random part)."""
    return _base62(zlib.crc32(body.encode()), CHECKSUM_CHARS)


def generate(environment: str = "live") -> str:
    """A new key such as ``fck_live_3xK9…Qz1a2B``."""
    if environment not in ENVIRONMENTS:
        raise ValueError(f"environment must be one of {ENVIRONMENTS}")
    random_part = "".join(secrets.choice(BASE62) for _ in range(RANDOM_CHARS))
    body = f"fck_{environment}_{random_part}"
    return body + checksum(body)


def is_well_formed(key: str) -> bool:
    """True when ``key`` has the right shape and its checksum matches."""
    match = KEY_RE.fullmatch(key)
    if match is None:
        return False
    body = key[:-CHECKSUM_CHARS]
    return hmac.compare_digest(checksum(body), match.group(3))


def display_prefix(key: str) -> str:
    return key[:DISPLAY_PREFIX_CHARS]


def hash_key(key: str, secret: bytes) -> str:
    """HMAC-SHA256 of the key with the server secret, as hex: all that is ever stored."""
    return hmac.new(secret, key.encode(), hashlib.sha256).hexdigest()
