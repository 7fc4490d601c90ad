"""Standard Webhooks signing: our own verify, and the standardwebhooks and svix libraries."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest
import standardwebhooks.webhooks
import svix.webhooks
from hypothesis import assume, given
from hypothesis import strategies as st

from forecourt import __version__
from forecourt.webhooks.signing import (
    RESERVED_HEADERS,
    SECRET_PREFIX,
    WebhookVerificationError,
    build_headers,
    generate_secret,
    parse_secret,
    sign,
    signature_header,
    verify,
)

SECRET = SECRET_PREFIX + base64.b64encode(bytes(range(32))).decode()
OTHER_SECRET = SECRET_PREFIX + base64.b64encode(bytes(range(100, 132))).decode()
NOW_S = 1_700_000_000
BODY = b'{"type":"invoice.paid","data":{"amount":42}}'
MSG_ID = "msg_2bQ8s7tZJ0xk"

secrets_st = st.binary(min_size=24, max_size=64).map(
    lambda key: SECRET_PREFIX + base64.b64encode(key).decode()
)
timestamps = st.integers(min_value=0, max_value=2**40)
msg_ids = st.text(min_size=1, max_size=64)
header_safe_ids = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=64
)


def headers_for(
    secret: str, msg_id: str, timestamp: int, body: bytes, *extra_secrets: str
) -> dict[str, str]:
    return build_headers(msg_id, timestamp, body, [secret, *extra_secrets])


# --- the property: whatever is signed verifies, and nothing else does ---


@given(secret=secrets_st, msg_id=msg_ids, timestamp=timestamps, body=st.binary(max_size=512))
def test_verify_accepts_what_sign_produced(
    secret: str, msg_id: str, timestamp: int, body: bytes
) -> None:
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
    }
    verify(secret, body, headers, now=timestamp)


@given(
    secret=secrets_st,
    msg_id=msg_ids,
    timestamp=timestamps,
    body=st.binary(min_size=1, max_size=512),
    data=st.data(),
)
def test_a_flipped_body_byte_fails(
    secret: str, msg_id: str, timestamp: int, body: bytes, data: st.DataObject
) -> None:
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
    }
    index = data.draw(st.integers(min_value=0, max_value=len(body) - 1))
    bit = data.draw(st.integers(min_value=0, max_value=7))
    tampered = bytearray(body)
    tampered[index] ^= 1 << bit
    with pytest.raises(WebhookVerificationError):
        verify(secret, bytes(tampered), headers, now=timestamp)


@given(secret=secrets_st, other=secrets_st, body=st.binary(max_size=256))
def test_a_different_secret_fails(secret: str, other: str, body: bytes) -> None:
    assume(parse_secret(secret) != parse_secret(other))
    headers = {
        "webhook-id": MSG_ID,
        "webhook-timestamp": str(NOW_S),
        "webhook-signature": sign(secret, MSG_ID, NOW_S, body),
    }
    with pytest.raises(WebhookVerificationError):
        verify(other, body, headers, now=NOW_S)


@given(msg_id=header_safe_ids, other_id=header_safe_ids)
def test_another_message_id_fails(msg_id: str, other_id: str) -> None:
    assume(msg_id != other_id)
    headers = headers_for(SECRET, msg_id, NOW_S, BODY)
    headers["webhook-id"] = other_id
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(SECRET, BODY, headers, now=NOW_S)


def test_another_timestamp_fails_even_within_tolerance() -> None:
    headers = headers_for(SECRET, MSG_ID, NOW_S, BODY)
    headers["webhook-timestamp"] = str(NOW_S + 1)
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(SECRET, BODY, headers, now=NOW_S)


def test_signature_matches_a_hand_computed_hmac() -> None:
    expected = hmac.new(
        bytes(range(32)), f"{MSG_ID}.{NOW_S}.".encode() + BODY, hashlib.sha256
    ).digest()
    assert sign(SECRET, MSG_ID, NOW_S, BODY) == "v1," + base64.b64encode(expected).decode()


# --- verify's edge cases ---


def test_headers_are_matched_case_insensitively() -> None:
    headers = {
        name.upper(): value for name, value in headers_for(SECRET, MSG_ID, NOW_S, BODY).items()
    }
    verify(SECRET, BODY, headers, now=NOW_S)


def test_a_str_body_verifies_like_its_utf8_bytes() -> None:
    body = '{"name":"Zoë ☕"}'
    headers = headers_for(SECRET, MSG_ID, NOW_S, body.encode())
    verify(SECRET, body, headers, now=NOW_S)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_a_missing_header_fails(missing: str) -> None:
    headers = headers_for(SECRET, MSG_ID, NOW_S, BODY)
    del headers[missing]
    with pytest.raises(WebhookVerificationError, match=f"missing {missing}"):
        verify(SECRET, BODY, headers, now=NOW_S)


@pytest.mark.parametrize(
    ("offset_s", "message"), [(-301, "too old"), (301, "future")], ids=["old", "new"]
)
def test_a_timestamp_outside_the_tolerance_fails(offset_s: int, message: str) -> None:
    headers = headers_for(SECRET, MSG_ID, NOW_S, BODY)
    with pytest.raises(WebhookVerificationError, match=message):
        verify(SECRET, BODY, headers, now=NOW_S - offset_s)


def test_a_timestamp_at_the_tolerance_edge_passes() -> None:
    headers = headers_for(SECRET, MSG_ID, NOW_S, BODY)
    verify(SECRET, BODY, headers, now=NOW_S + 300)
    verify(SECRET, BODY, headers, now=NOW_S - 300)
    verify(SECRET, BODY, headers, now=NOW_S + 1000, tolerance_s=1000)


@pytest.mark.parametrize("value", ["", " 1700000000", "1_700_000_000", "-5", "1.7e9", "abc"])
def test_a_malformed_timestamp_fails(value: str) -> None:
    headers = headers_for(SECRET, MSG_ID, NOW_S, BODY)
    headers["webhook-timestamp"] = value
    with pytest.raises(WebhookVerificationError):
        verify(SECRET, BODY, headers, now=NOW_S)


def test_unknown_versions_and_garbage_signatures_are_skipped() -> None:
    good = sign(SECRET, MSG_ID, NOW_S, BODY)
    headers = headers_for(SECRET, MSG_ID, NOW_S, BODY)
    headers["webhook-signature"] = f"v2,{good[3:]} v1,!!notbase64!! nocomma {good}"
    verify(SECRET, BODY, headers, now=NOW_S)
    headers["webhook-signature"] = f"v1a,{good[3:]} v1,!!notbase64!!"
    with pytest.raises(WebhookVerificationError):
        verify(SECRET, BODY, headers, now=NOW_S)


def test_verify_uses_the_wall_clock_by_default() -> None:
    now = int(time.time())
    verify(SECRET, BODY, headers_for(SECRET, MSG_ID, now, BODY))
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify(SECRET, BODY, headers_for(SECRET, MSG_ID, now - 3600, BODY))


# --- rotation: both secrets sign ---


def test_during_a_rotation_either_secret_verifies() -> None:
    headers = headers_for(SECRET, MSG_ID, NOW_S, BODY, OTHER_SECRET)
    signatures = headers["webhook-signature"].split(" ")
    assert signatures == [
        sign(SECRET, MSG_ID, NOW_S, BODY),
        sign(OTHER_SECRET, MSG_ID, NOW_S, BODY),
    ]
    verify(SECRET, BODY, headers, now=NOW_S)
    verify(OTHER_SECRET, BODY, headers, now=NOW_S)
    with pytest.raises(WebhookVerificationError):
        verify(generate_secret(), BODY, headers, now=NOW_S)


def test_signature_header_needs_a_secret() -> None:
    with pytest.raises(ValueError, match="at least one secret"):
        signature_header([], MSG_ID, NOW_S, BODY)


# --- the real libraries from PyPI verify our headers ---


def library_case(*extra_secrets: str) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"type": "order.created", "data": {"id": 7, "note": "café"}}).encode()
    return body, headers_for(SECRET, MSG_ID, int(time.time()), body, *extra_secrets)


def test_standardwebhooks_verifies_our_headers() -> None:
    body, headers = library_case()
    payload = standardwebhooks.webhooks.Webhook(SECRET).verify(body, headers)
    assert payload == json.loads(body)


def test_svix_verifies_our_headers() -> None:
    body, headers = library_case()
    svix.webhooks.Webhook(SECRET).verify(body, headers)


@pytest.mark.parametrize("library", ["standardwebhooks", "svix"])
def test_the_libraries_accept_either_secret_during_a_rotation(library: str) -> None:
    body, headers = library_case(OTHER_SECRET)
    for secret in (SECRET, OTHER_SECRET):
        if library == "svix":
            svix.webhooks.Webhook(secret).verify(body, headers)
        else:
            standardwebhooks.webhooks.Webhook(secret).verify(body, headers)


def test_standardwebhooks_refuses_a_wrong_secret_or_an_altered_body() -> None:
    body, headers = library_case()
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.webhooks.Webhook(OTHER_SECRET).verify(body, headers)
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.webhooks.Webhook(SECRET).verify(body.replace(b"7", b"8"), headers)


def test_svix_refuses_a_wrong_secret_or_an_altered_body() -> None:
    body, headers = library_case()
    with pytest.raises(svix.webhooks.WebhookVerificationError):
        svix.webhooks.Webhook(OTHER_SECRET).verify(body, headers)
    with pytest.raises(svix.webhooks.WebhookVerificationError):
        svix.webhooks.Webhook(SECRET).verify(body.replace(b"7", b"8"), headers)


@given(
    msg_id=header_safe_ids,
    text=st.text(max_size=200),
    secret=secrets_st,
)
def test_both_libraries_verify_arbitrary_messages(msg_id: str, text: str, secret: str) -> None:
    body = json.dumps({"text": text}, ensure_ascii=False).encode()
    headers = build_headers(msg_id, int(time.time()), body, [secret])
    standardwebhooks.webhooks.Webhook(secret).verify(body, headers)
    svix.webhooks.Webhook(secret).verify(body, headers)


def test_generated_secrets_work_with_the_libraries() -> None:
    secret = generate_secret()
    body = b'{"ok":true}'
    headers = build_headers(MSG_ID, int(time.time()), body, [secret])
    standardwebhooks.webhooks.Webhook(secret).verify(body, headers)
    svix.webhooks.Webhook(secret).verify(body, headers)


# --- the request headers ---


def test_build_headers_sets_the_standard_headers() -> None:
    headers = build_headers(MSG_ID, NOW_S, BODY, [SECRET])
    assert headers == {
        "webhook-id": MSG_ID,
        "webhook-timestamp": str(NOW_S),
        "webhook-signature": sign(SECRET, MSG_ID, NOW_S, BODY),
        "Content-Type": "application/json",
        "User-Agent": f"Forecourt-Webhooks/{__version__}",
    }


def test_custom_headers_are_added() -> None:
    headers = build_headers(
        MSG_ID, NOW_S, BODY, [SECRET], custom={"X-Tenant": "acme", "Authorization": "Bearer t"}
    )
    assert headers["X-Tenant"] == "acme"
    assert headers["Authorization"] == "Bearer t"


@pytest.mark.parametrize(
    "name",
    [
        "webhook-signature",
        "Webhook-Signature",
        "WEBHOOK-ID",
        "webhook-timestamp",
        "content-type",
        "Content-Type",
        "user-agent",
        "Host",
        "Content-Length",
        "Transfer-Encoding",
        "Connection",
        "svix-signature",
    ],
)
def test_custom_headers_cannot_override_reserved_ones(name: str) -> None:
    assert name.lower() in RESERVED_HEADERS
    headers = build_headers(MSG_ID, NOW_S, BODY, [SECRET], custom={name: "forged"})
    assert "forged" not in headers.values()
    assert len([key for key in headers if key.lower() == name.lower()]) <= 1
    verify(SECRET, BODY, headers, now=NOW_S)


def test_svix_headers_are_reserved_because_svix_prefers_them() -> None:
    body, headers = library_case()
    forged = dict(headers, **{"svix-signature": "v1,Zm9yZ2Vk"})
    with pytest.raises(svix.webhooks.WebhookVerificationError):
        svix.webhooks.Webhook(SECRET).verify(body, forged)
    rebuilt = build_headers(
        headers["webhook-id"],
        int(headers["webhook-timestamp"]),
        body,
        [SECRET],
        custom={"svix-signature": "v1,Zm9yZ2Vk", "Svix-Id": "other"},
    )
    svix.webhooks.Webhook(SECRET).verify(body, rebuilt)


def test_each_reserved_name_appears_exactly_once() -> None:
    custom = {name.title(): "forged" for name in RESERVED_HEADERS}
    headers = build_headers(MSG_ID, NOW_S, BODY, [SECRET], custom=custom)
    lowered = [name.lower() for name in headers]
    assert len(lowered) == len(set(lowered))
    assert "forged" not in headers.values()


def test_two_spellings_of_one_custom_header_keep_the_last() -> None:
    headers = build_headers(MSG_ID, NOW_S, BODY, [SECRET], custom={"X-A": "1", "x-a": "2"})
    assert [(k, v) for k, v in headers.items() if k.lower() == "x-a"] == [("x-a", "2")]


@pytest.mark.parametrize(
    "custom",
    [{"X-A": "evil\r\nX-Injected: 1"}, {"X-A": "a\nb"}, {"X-A": "a\x00"}, {"Bad Name": "v"}],
)
def test_header_injection_is_refused(custom: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="header"):
        build_headers(MSG_ID, NOW_S, BODY, [SECRET], custom=custom)


def test_a_message_id_with_a_newline_is_refused() -> None:
    with pytest.raises(ValueError, match="CR, LF"):
        build_headers("msg\r\nX-Injected: 1", NOW_S, BODY, [SECRET])


# --- secrets ---


def test_generate_secret_has_the_standard_shape() -> None:
    secret = generate_secret()
    assert secret.startswith("whsec_")
    key = base64.b64decode(secret[len("whsec_") :], validate=True)
    assert len(key) == 32
    assert parse_secret(secret) == key
    assert generate_secret() != secret


def test_parse_secret_accepts_unpadded_base64() -> None:
    key = bytes(range(25))  # 25 bytes: base64 with padding
    padded = base64.b64encode(key).decode()
    assert padded.endswith("=")
    assert parse_secret("whsec_" + padded.rstrip("=")) == key
    assert parse_secret("whsec_" + padded) == key


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ("", "must start with"),
        (base64.b64encode(bytes(32)).decode(), "must start with"),
        ("WHSEC_" + base64.b64encode(bytes(32)).decode(), "must start with"),
        ("whsec_", "no key"),
        ("whsec_not base64!", "not valid base64"),
        ("whsec_" + base64.urlsafe_b64encode(b"\xff" * 32).decode(), "not valid base64"),
        ("whsec_" + base64.b64encode(bytes(23)).decode(), "24 to 64 bytes, not 23"),
        ("whsec_" + base64.b64encode(bytes(65)).decode(), "24 to 64 bytes, not 65"),
    ],
)
def test_parse_secret_rejects_bad_secrets(secret: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_secret(secret)


def test_sign_refuses_a_bad_secret_and_a_negative_timestamp() -> None:
    with pytest.raises(ValueError):
        sign("whsec_short", MSG_ID, NOW_S, BODY)
    with pytest.raises(ValueError, match="negative"):
        sign(SECRET, MSG_ID, -1, BODY)
