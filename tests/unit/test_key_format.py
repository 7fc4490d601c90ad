"""Pure key logic: the key format, scopes, pagination cursors, the key cache, the rate-limit
policy. No I/O."""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import time
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from forecourt import scopes
from forecourt.errors import InvalidInput
from forecourt.ids import new_id
from forecourt.keys import format as key_format
from forecourt.keys.cache import NEGATIVE_TTL_S, CachedKey, KeyCache
from forecourt.pagination import decode_cursor, encode_cursor, next_cursor
from forecourt.ratelimit.policy import MAX_LIMIT, Policy, validate_limits
from forecourt.ratelimit.windows import Window

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
LIVE_KEY_RE = re.compile(r"^fck_live_[0-9A-Za-z]{36}$")
TEST_KEY_RE = re.compile(r"^fck_test_[0-9A-Za-z]{36}$")
PREFIX_LEN = len("fck_live_")

random_parts = st.text(alphabet=BASE62, min_size=30, max_size=30)
environments = st.sampled_from(["live", "test"])


def build_key(environment: str, random_part: str) -> str:
    body = f"fck_{environment}_{random_part}"
    return body + key_format.checksum(body)


@st.composite
def valid_keys(draw: st.DrawFn) -> str:
    return build_key(draw(environments), draw(random_parts))


# -- key format -----------------------------------------------------------------------------


def test_generated_live_and_test_keys_have_the_documented_shape() -> None:
    live = key_format.generate("live")
    test = key_format.generate("test")
    assert LIVE_KEY_RE.match(live), live
    assert TEST_KEY_RE.match(test), test
    assert key_format.generate().startswith("fck_live_")
    for key in (live, test):
        assert len(key) == PREFIX_LEN + 30 + 6
        assert key_format.is_well_formed(key)
        assert key[-6:] == key_format.checksum(key[:-6])


def test_unknown_environment_is_refused() -> None:
    with pytest.raises(ValueError):
        key_format.generate("prod")


def test_random_part_carries_at_least_128_bits() -> None:
    assert key_format.RANDOM_CHARS >= 30
    assert key_format.RANDOM_CHARS * math.log2(62) >= 128
    keys = [key_format.generate() for _ in range(300)]
    random_parts_seen = [k[PREFIX_LEN : PREFIX_LEN + 30] for k in keys]
    assert all(len(p) == 30 and set(p) <= set(BASE62) for p in random_parts_seen)
    assert len(set(random_parts_seen)) == len(keys)
    # 9,000 draws from 62 symbols: a healthy generator uses every one of them (a generator
    # limited to hex, or to one case, would not).
    used = set("".join(random_parts_seen))
    assert used == set(BASE62)


def test_display_prefix_is_the_first_13_characters() -> None:
    key = key_format.generate()
    assert key_format.display_prefix(key) == key[:13]
    assert len(key_format.display_prefix(key)) == 13
    assert key_format.display_prefix(key).startswith("fck_live_")


@given(valid_keys())
def test_keys_built_with_their_checksum_are_well_formed(key: str) -> None:
    assert key_format.is_well_formed(key)


@given(valid_keys(), st.data())
def test_any_single_character_substitution_is_detected(key: str, data: st.DataObject) -> None:
    position = data.draw(st.integers(0, len(key) - 1))
    replacement = data.draw(
        st.one_of(st.sampled_from(BASE62), st.characters(codec="utf-8")).filter(
            lambda c: c != key[position]
        )
    )
    mutated = key[:position] + replacement + key[position + 1 :]
    # CRC32 detects every error confined to 32 consecutive bits, so a changed character in
    # the random part can never keep the checksum valid; elsewhere the shape breaks.
    assert not key_format.is_well_formed(mutated)


@given(valid_keys(), st.data())
def test_insertions_deletions_and_transpositions_are_detected(
    key: str, data: st.DataObject
) -> None:
    position = data.draw(st.integers(0, len(key) - 1))
    deleted = key[:position] + key[position + 1 :]
    inserted = key[:position] + data.draw(st.sampled_from(BASE62)) + key[position:]
    appended = key + data.draw(st.sampled_from([*BASE62, "\n", " "]))
    assert not key_format.is_well_formed(deleted)
    assert not key_format.is_well_formed(inserted)
    assert not key_format.is_well_formed(appended)
    if position + 1 < len(key) and key[position] != key[position + 1]:
        swapped = key[:position] + key[position + 1] + key[position] + key[position + 2 :]
        assert not key_format.is_well_formed(swapped)


@given(st.text())
def test_is_well_formed_never_raises(text: str) -> None:
    assert key_format.is_well_formed(text) in (True, False)


def test_obvious_garbage_is_not_well_formed() -> None:
    key = key_format.generate()
    for bad in (
        "",
        "fck_",
        "Bearer " + key,
        key.upper(),
        key.replace("live", "prod"),
        "fck_live_" + "a" * 36,
        key[:-1],
    ):
        assert not key_format.is_well_formed(bad), bad


@given(st.text(min_size=1), st.binary(min_size=1, max_size=64), st.binary(min_size=1))
def test_hash_key_is_hmac_sha256_hex(key: str, secret: bytes, other: bytes) -> None:
    assume(secret != other)
    digest = key_format.hash_key(key, secret)
    expected = hmac.new(secret, key.encode(), hashlib.sha256).hexdigest()
    assert digest == expected
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert key_format.hash_key(key, secret) == digest
    assert key_format.hash_key(key, other) != digest


def test_hash_key_differs_between_keys() -> None:
    secret = b"server-secret"
    a, b = key_format.generate(), key_format.generate()
    assert key_format.hash_key(a, secret) != key_format.hash_key(b, secret)
    assert a not in key_format.hash_key(a, secret)


# -- scopes ---------------------------------------------------------------------------------


def test_validate_names_the_field_of_an_unknown_scope() -> None:
    with pytest.raises(InvalidInput) as info:
        scopes.validate(["keys:read", "keys:destroy"])
    assert info.value.field == "scopes"
    assert "keys:destroy" in info.value.detail
    assert info.value.extra["errors"] == [{"field": "scopes", "message": info.value.detail}]
    with pytest.raises(InvalidInput) as info:
        scopes.validate(["nope"], field="body.scopes")
    assert info.value.field == "body.scopes"


def test_validate_refuses_an_empty_list() -> None:
    with pytest.raises(InvalidInput) as info:
        scopes.validate([])
    assert info.value.field == "scopes"


def test_validate_deduplicates_and_sorts() -> None:
    assert scopes.validate(["webhooks:write", "keys:read", "webhooks:write", "admin"]) == [
        "admin",
        "keys:read",
        "webhooks:write",
    ]


@given(st.lists(st.sampled_from(sorted(scopes.ALL_SCOPES)), min_size=1))
def test_validate_of_known_scopes_is_their_sorted_set(chosen: list[str]) -> None:
    assert scopes.validate(chosen) == sorted(set(chosen))


def test_admin_expands_to_every_scope_of_its_tenant() -> None:
    assert scopes.expand(["admin"]) == scopes.TENANT_SCOPES
    assert scopes.expand(["keys:read", "admin"]) == scopes.TENANT_SCOPES
    assert scopes.SYSTEM_ADMIN not in scopes.expand(["admin"])
    assert scopes.expand(["admin", scopes.SYSTEM_ADMIN]) == scopes.ALL_SCOPES
    assert {"keys:write", "webhooks:write", "events:publish", "audit-log:read"} <= (
        scopes.expand(["admin"])
    )


def test_write_implies_read_and_nothing_more() -> None:
    assert scopes.expand(["keys:write"]) == {"keys:write", "keys:read"}
    assert scopes.expand(["keys:read"]) == {"keys:read"}
    assert scopes.expand(["events:publish"]) == {"events:publish"}
    assert scopes.expand(["plugins:execute"]) == {"plugins:execute"}
    assert scopes.expand([]) == frozenset()
    assert "admin" not in scopes.expand(sorted(scopes.ALL_SCOPES - {"admin"}))


@given(st.sets(st.sampled_from(sorted(scopes.ALL_SCOPES - {"admin"}))))
def test_expand_is_idempotent_and_grows_only_by_reads(held: set[str]) -> None:
    expanded = scopes.expand(held)
    assert held <= expanded
    assert scopes.expand(expanded) == expanded
    for extra in expanded - held:
        assert extra.endswith(":read")
        assert extra.replace(":read", ":write") in held


# -- pagination cursors ---------------------------------------------------------------------

ids = st.builds(
    lambda prefix, rest: f"{prefix}_{rest}",
    st.text(alphabet=st.characters(codec="utf-8"), max_size=20),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=40),
)


@given(ids)
def test_cursor_roundtrip(value: str) -> None:
    cursor = encode_cursor(value)
    assert re.fullmatch(r"[A-Za-z0-9_-]*", cursor), cursor
    assert decode_cursor(cursor) == value


def test_cursor_roundtrip_of_real_ids() -> None:
    for prefix in ("key", "aud", "evt"):
        value = new_id(prefix)
        assert decode_cursor(encode_cursor(value)) == value


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "!!!",
        "a",
        "%%%%",
        encode_cursor("no-underscore-here"),
        "__8_",  # base64 of bytes that are not UTF-8
        "\udcff",
    ],
)
def test_garbage_cursor_is_invalid_input_naming_cursor(garbage: str) -> None:
    with pytest.raises(InvalidInput) as info:
        decode_cursor(garbage)
    assert info.value.field == "cursor"


@given(st.text())
def test_decode_cursor_returns_an_id_or_raises_invalid_input(text: str) -> None:
    try:
        value = decode_cursor(text)
    except InvalidInput as exc:
        assert exc.field == "cursor"
    else:
        assert "_" in value


@given(st.integers(0, 12), st.integers(1, 5))
def test_next_cursor_points_at_the_last_row_of_a_full_page(rows: int, limit: int) -> None:
    fetched = [SimpleNamespace(id=f"key_{i:04d}") for i in range(min(rows, limit + 1))]
    page, cursor = next_cursor(fetched, limit)
    assert page == fetched[:limit]
    if len(fetched) > limit:
        assert cursor is not None
        assert decode_cursor(cursor) == page[-1].id
    else:
        assert cursor is None


# -- key cache ------------------------------------------------------------------------------


def cached(key_id: str = "key_1", **overrides: Any) -> CachedKey:
    fields: dict[str, Any] = {
        "id": key_id,
        "tenant_id": "ten_1",
        "scopes": frozenset({"keys:read"}),
        "tier": "free",
        "rate_limits": {},
        "expires_at": None,
        "revoked": False,
        "via_previous": False,
        "previous_expires_at": None,
        **overrides,
    }
    return CachedKey(**fields)


def test_cache_hit_until_the_ttl_passes() -> None:
    cache = KeyCache(ttl_s=30.0)
    value = cached()
    cache.put("h1", value)
    now = time.monotonic()
    assert cache.get("h1", now) == (True, value)
    assert cache.get("h1", now + 29.0) == (True, value)
    assert cache.get("h1", now + 31.0) == (False, None)
    # An expired entry is dropped, not just hidden.
    assert len(cache) == 0
    assert cache.get("h1") == (False, None)


def test_unknown_hashes_are_cached_briefly() -> None:
    cache = KeyCache(ttl_s=30.0)
    cache.put("unknown", None)
    cache.put("known", cached())
    now = time.monotonic()
    assert cache.get("unknown", now) == (True, None)
    assert cache.get("unknown", now + NEGATIVE_TTL_S + 0.5) == (False, None)
    assert cache.get("known", now + NEGATIVE_TTL_S + 0.5)[0] is True
    assert NEGATIVE_TTL_S < 30.0


def test_negative_ttl_never_exceeds_the_cache_ttl() -> None:
    cache = KeyCache(ttl_s=1.0)
    cache.put("unknown", None)
    assert cache.get("unknown", time.monotonic() + 1.5) == (False, None)


def test_zero_ttl_disables_the_cache() -> None:
    cache = KeyCache(ttl_s=0)
    cache.put("h1", cached())
    cache.put("h2", None)
    assert len(cache) == 0
    assert cache.get("h1") == (False, None)


def test_invalidate_drops_every_hash_of_the_key() -> None:
    cache = KeyCache(ttl_s=30.0)
    current = cached("key_1")
    previous = cached("key_1", via_previous=True, previous_expires_at=time.time() + 60)
    other = cached("key_2")
    cache.put("current", current)
    cache.put("previous", previous)
    cache.put("other", other)
    cache.put("unknown", None)
    cache.invalidate("key_1")
    assert cache.get("current") == (False, None)
    assert cache.get("previous") == (False, None)
    assert cache.get("other") == (True, other)
    assert cache.get("unknown") == (True, None)
    cache.invalidate("key_1")  # twice is harmless
    cache.invalidate("key_never_seen")
    assert len(cache) == 1  # the known keys; the unknown one is among the negatives
    assert len(cache.negatives) == 1


def test_cache_is_bounded_and_evicts_the_least_recently_used() -> None:
    cache = KeyCache(ttl_s=30.0, max_entries=3)
    for name in ("a", "b", "c"):
        cache.put(name, cached(f"key_{name}"))
    assert cache.get("a")[0] is True  # "a" is now the most recently used
    cache.put("d", cached("key_d"))
    assert len(cache) == 3
    assert cache.get("b") == (False, None)
    assert cache.get("a")[0] is True
    assert cache.get("c")[0] is True
    assert cache.get("d")[0] is True
    for i in range(50):
        cache.put(f"x{i}", cached(f"key_x{i}") if i % 2 else None)
        assert len(cache) <= 3
    # Evicted keys leave nothing behind for invalidation to trip over.
    cache.invalidate("key_a")
    cache.invalidate("key_x49")
    assert cache.get("x49") == (False, None)


def test_cached_key_validity() -> None:
    now = time.time()
    assert cached().valid_at(now)
    assert not cached(revoked=True).valid_at(now)
    assert cached(expires_at=now + 10).valid_at(now)
    assert not cached(expires_at=now).valid_at(now)
    assert not cached(expires_at=now - 1).valid_at(now)
    assert cached(via_previous=True, previous_expires_at=now + 10).valid_at(now)
    assert not cached(via_previous=True, previous_expires_at=now - 1).valid_at(now)
    assert not cached(via_previous=True, previous_expires_at=None).valid_at(now)
    # A revoked key's previous secret does not outlive the revocation.
    assert not cached(revoked=True, via_previous=True, previous_expires_at=now + 10).valid_at(now)


# -- rate-limit policy ----------------------------------------------------------------------

TIERS = {
    "free": {"minute": 60, "hour": 1000, "day": 10_000},
    "pro": {"minute": 600, "hour": 20_000},
}


def test_key_windows_merge_tier_and_overrides_shortest_first() -> None:
    policy = Policy(TIERS, "free", {"minute": 120})
    assert policy.for_key("free", {}) == (
        Window("minute", 60, 60),
        Window("hour", 1000, 3600),
        Window("day", 10_000, 86_400),
    )
    # Overrides win over the tier and may add windows the tier lacks.
    assert policy.for_key("pro", {"minute": 5, "second": 2, "day": 50}) == (
        Window("second", 2, 1),
        Window("minute", 5, 60),
        Window("hour", 20_000, 3600),
        Window("day", 50, 86_400),
    )


def test_unknown_or_missing_tier_falls_back_to_the_default() -> None:
    policy = Policy(TIERS, "free", {"minute": 120})
    assert policy.for_key(None, {}) == policy.for_key("free", {})
    assert policy.for_key("gold", {"minute": 7}) == policy.for_key("free", {"minute": 7})


def test_memoised_windows_do_not_leak_between_overrides() -> None:
    policy = Policy(TIERS, "free", {"minute": 120})
    first = policy.for_key("free", {"minute": 3})
    assert policy.for_key("free", {})[0] == Window("minute", 60, 60)
    assert policy.for_key("free", {"minute": 3}) == first
    assert policy.for_key("free", {"minute": 4})[0] == Window("minute", 4, 60)


def test_policy_copies_its_tiers() -> None:
    tiers = {"free": {"minute": 60}}
    policy = Policy(tiers, "free", {"minute": 120})
    tiers["free"]["minute"] = 1
    assert policy.for_key("free", {}) == (Window("minute", 60, 60),)


def test_ip_windows_and_default_tier_checks() -> None:
    policy = Policy(TIERS, "free", {"hour": 500, "minute": 20})
    assert policy.ip_windows == (Window("minute", 20, 60), Window("hour", 500, 3600))
    with pytest.raises(ValueError):
        Policy(TIERS, "gold", {})
    assert policy.check_tier("pro") == "pro"
    with pytest.raises(InvalidInput) as info:
        policy.check_tier("gold")
    assert info.value.field == "tier"


def test_validate_limits_accepts_positive_integers_for_known_windows() -> None:
    limits = {"second": 1, "minute": 60, "hour": MAX_LIMIT}
    assert validate_limits(limits) == limits
    assert validate_limits(limits) is not limits
    assert validate_limits({}) == {}


@pytest.mark.parametrize(
    ("limits", "field"),
    [
        ({"minute": 0}, "rate_limits.minute"),
        ({"minute": -5}, "rate_limits.minute"),
        ({"hour": True}, "rate_limits.hour"),
        ({"hour": False}, "rate_limits.hour"),
        ({"day": 1.5}, "rate_limits.day"),
        ({"day": "10"}, "rate_limits.day"),
        ({"minute": MAX_LIMIT + 1}, "rate_limits.minute"),
        ({"fortnight": 3}, "rate_limits.fortnight"),
        ({"minute": 10, "Minute": 10}, "rate_limits.Minute"),
    ],
)
def test_validate_limits_names_the_bad_window(limits: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        validate_limits(limits)
    assert info.value.field == field


def test_validate_limits_uses_the_given_field_prefix() -> None:
    with pytest.raises(InvalidInput) as info:
        validate_limits({"week": 1}, field="ip_rate_limit")
    assert info.value.field == "ip_rate_limit.week"
    assert "minute" in info.value.detail  # it says which names are known
