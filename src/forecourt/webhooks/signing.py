"""Standard Webhooks signing: the headers every outgoing webhook request carries.

A request is signed with HMAC-SHA256 over ``f"{msg_id}.{timestamp}.".encode() + body`` and
the result is sent as ``webhook-signature: v1,<base64>``. Secrets are ``whsec_<base64>``.
While an endpoint's secret is being rotated, the old and the new secret both sign, so the
header holds two space-separated signatures and a receiver holding either one accepts it.

The same format is what the ``standardwebhooks`` and ``svix`` libraries verify; :func:`verify`
is the receiving side, for our SDK and tests.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import re
import time
from collections.abc import Mapping, Sequence
from secrets import token_bytes

from forecourt import __version__

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32  # key length of a secret from generate_secret()
SECRET_MIN_BYTES = 24
SECRET_MAX_BYTES = 64
SIGNATURE_VERSION = "v1"
KEY_CACHE_SIZE = 10_000  # parsed secrets kept for signing
DEFAULT_TOLERANCE_S = 300  # how far a timestamp may be from the receiver's clock
USER_AGENT = f"Forecourt-Webhooks/{__version__}"

HEADER_ID = "webhook-id"
HEADER_TIMESTAMP = "webhook-timestamp"
HEADER_SIGNATURE = "webhook-signature"

RESERVED_HEADERS: frozenset[str] = frozenset(
    {
        HEADER_ID,
        HEADER_TIMESTAMP,
        HEADER_SIGNATURE,
        "content-type",
        "user-agent",
        # The svix library prefers its own names over the webhook-* ones, so a custom
        # svix-signature would replace ours for every svix receiver.
        "svix-id",
        "svix-timestamp",
        "svix-signature",
        # Framing and hop-by-hop headers belong to the HTTP client, not to the endpoint.
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "expect",
        "proxy-connection",
    }
)
"""Lower-case header names that custom endpoint headers may not set."""

# RFC 9110 token characters: what a header name may consist of.
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEADER_VALUE_FORBIDDEN = re.compile(r"[\r\n\x00]")


class WebhookVerificationError(Exception):
    """The webhook request is not authentic: a header is missing, stale, or unsigned."""


def generate_secret() -> str:
    """A new random signing secret, ``whsec_`` followed by 32 bytes in padded base64."""
    return SECRET_PREFIX + base64.b64encode(token_bytes(SECRET_BYTES)).decode("ascii")


def parse_secret(secret: str) -> bytes:
    """The key bytes of a ``whsec_<base64>`` secret.

    Raises ``ValueError`` when the prefix is missing, the rest is not standard base64
    (padding may be omitted), or the key is not 24 to 64 bytes long.
    """
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"webhook secret must start with {SECRET_PREFIX!r}")
    encoded = secret[len(SECRET_PREFIX) :]
    if not encoded:
        raise ValueError("webhook secret has no key after the prefix")
    # Other implementations strip the padding; accept both spellings of the same key.
    padded = encoded + "=" * (-len(encoded) % 4)
    try:
        key = base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("webhook secret is not valid base64 after the prefix") from None
    if not SECRET_MIN_BYTES <= len(key) <= SECRET_MAX_BYTES:
        raise ValueError(
            f"webhook secret key must be {SECRET_MIN_BYTES} to {SECRET_MAX_BYTES} bytes, "
            f"not {len(key)}"
        )
    return key


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``v1,<base64>`` signature of one message under one secret.

    ``timestamp`` is in whole seconds since the Unix epoch.
    """
    return _signature(_key(secret), msg_id, timestamp, body)


@functools.lru_cache(maxsize=KEY_CACHE_SIZE)
def _key(secret: str) -> bytes:
    """``parse_secret``, remembered: a worker signs with the same few secrets again and again."""
    return parse_secret(secret)


def signature_header(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: one signature per secret, space-separated."""
    if not secrets:
        raise ValueError("at least one secret is needed to sign a webhook")
    return " ".join(sign(secret, msg_id, timestamp, body) for secret in secrets)


def build_headers(
    msg_id: str,
    timestamp: int,
    body: bytes,
    secrets: Sequence[str],
    custom: Mapping[str, str] | None = None,
    user_agent: str = USER_AGENT,
) -> dict[str, str]:
    """All headers of a webhook request whose body is ``body`` (JSON).

    Custom headers of the endpoint are included, except those named in
    :data:`RESERVED_HEADERS` (compared case-insensitively): they are dropped, so an endpoint
    can never replace the signature, the content type or the framing. A custom header whose
    name is not an HTTP token or whose value holds CR, LF or NUL raises ``ValueError``.
    """
    if not msg_id:
        raise ValueError("a webhook message id must not be empty")
    _check_header_value(HEADER_ID, msg_id)
    headers: dict[str, str] = {}
    spelled: dict[str, str] = {}  # lower-case name -> the spelling kept in ``headers``
    for name, value in (custom or {}).items():
        if not _HEADER_NAME.fullmatch(name):
            raise ValueError(f"custom header name {name!r} is not a valid HTTP header name")
        _check_header_value(name, value)
        lower = name.lower()
        if lower in RESERVED_HEADERS:
            continue
        # Two spellings of one name would both be sent; the later one wins.
        previous = spelled.pop(lower, None)
        if previous is not None:
            del headers[previous]
        spelled[lower] = name
        headers[name] = value
    headers[HEADER_ID] = msg_id
    headers[HEADER_TIMESTAMP] = str(timestamp)
    headers[HEADER_SIGNATURE] = signature_header(secrets, msg_id, timestamp, body)
    headers["Content-Type"] = "application/json"
    headers["User-Agent"] = user_agent
    return headers


def verify(
    secret: str,
    body: bytes | str,
    headers: Mapping[str, str],
    *,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> None:
    """Check that a received webhook was signed with ``secret`` and is recent.

    Header names are matched case-insensitively. Any of the space-separated ``v1``
    signatures may match. Raises :class:`WebhookVerificationError` otherwise, and
    ``ValueError`` if ``secret`` itself is malformed.
    """
    key = parse_secret(secret)
    lowered = {name.lower(): value for name, value in headers.items()}
    msg_id = _required(lowered, HEADER_ID)
    timestamp_text = _required(lowered, HEADER_TIMESTAMP)
    signatures = _required(lowered, HEADER_SIGNATURE)

    # int() would also take " 12", "1_2" or "-12"; the header is plain decimal digits.
    if not (timestamp_text.isascii() and timestamp_text.isdigit()):
        raise WebhookVerificationError(f"{HEADER_TIMESTAMP} is not a whole number of seconds")
    timestamp = int(timestamp_text)
    current = time.time() if now is None else now
    if timestamp < current - tolerance_s:
        raise WebhookVerificationError("message timestamp is too old")
    if timestamp > current + tolerance_s:
        raise WebhookVerificationError("message timestamp is too far in the future")

    payload = body.encode() if isinstance(body, str) else body
    expected = _digest(key, msg_id, timestamp, payload)
    for candidate in signatures.split():
        version, _, encoded = candidate.partition(",")
        if version != SIGNATURE_VERSION:
            continue
        try:
            received = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            continue
        if hmac.compare_digest(expected, received):
            return
    raise WebhookVerificationError("no matching signature found")


def _digest(key: bytes, msg_id: str, timestamp: int, body: bytes) -> bytes:
    if timestamp < 0:
        raise ValueError("webhook timestamp must not be negative")
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return hmac.digest(key, signed, "sha256")


def _signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    encoded = base64.b64encode(_digest(key, msg_id, timestamp, body)).decode("ascii")
    return f"{SIGNATURE_VERSION},{encoded}"


def _required(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if not value:
        raise WebhookVerificationError(f"missing {name} header")
    return value


def _check_header_value(name: str, value: str) -> None:
    if _HEADER_VALUE_FORBIDDEN.search(value):
        raise ValueError(f"header {name!r} must not contain CR, LF or NUL")
