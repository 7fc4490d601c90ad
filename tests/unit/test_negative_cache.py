"""The negative cache: unknown key hashes are remembered in a bounded structure of their own,
so a flood of them can never evict a valid key from the cache."""

from __future__ import annotations

import time

from forecourt.keys.cache import NEGATIVE_TTL_S, CachedKey, KeyCache, NegativeCache


def cached(key_id: str) -> CachedKey:
    return CachedKey(
        id=key_id,
        tenant_id="ten_1",
        scopes=frozenset({"keys:read"}),
        tier="free",
        rate_limits={},
        expires_at=None,
        revoked=False,
        via_previous=False,
        previous_expires_at=None,
    )


def test_a_flood_of_unknown_hashes_never_evicts_a_valid_key() -> None:
    cache = KeyCache(ttl_s=30.0, max_entries=2, max_negatives=4)
    cache.put("valid-a", cached("key_a"))
    cache.put("valid-b", cached("key_b"))
    for i in range(1000):
        cache.put(f"bogus-{i}", None)
    assert cache.get("valid-a") == (True, cached("key_a"))
    assert cache.get("valid-b") == (True, cached("key_b"))
    assert len(cache) == 2
    # The negatives stay within their own bound, keeping the newest.
    assert len(cache.negatives) == 4
    assert cache.get("bogus-999") == (True, None)
    assert cache.get("bogus-0") == (False, None)


def test_negatives_are_bounded_first_in_first_out() -> None:
    negatives = NegativeCache(ttl_s=60.0, max_entries=3)
    for name in ("a", "b", "c", "d"):
        negatives.add(name)
    assert len(negatives) == 3
    assert not negatives.hit("a")
    assert negatives.hit("b") and negatives.hit("c") and negatives.hit("d")
    # A hit does not refresh an entry: the oldest still goes first.
    negatives.add("e")
    assert not negatives.hit("b")
    assert negatives.hit("e")


def test_negatives_expire() -> None:
    negatives = NegativeCache(ttl_s=5.0)
    negatives.add("x")
    now = time.monotonic()
    assert negatives.hit("x", now)
    assert not negatives.hit("x", now + 5.5)
    assert len(negatives) == 0


def test_a_key_found_later_replaces_its_negative_entry() -> None:
    cache = KeyCache(ttl_s=30.0)
    cache.put("h", None)
    assert cache.get("h") == (True, None)
    cache.put("h", cached("key_h"))
    assert cache.get("h") == (True, cached("key_h"))
    assert len(cache.negatives) == 0


def test_a_valid_key_evicted_by_other_valid_keys_only() -> None:
    cache = KeyCache(ttl_s=30.0, max_entries=1, max_negatives=1)
    cache.put("valid-a", cached("key_a"))
    cache.put("bogus", None)
    assert cache.get("valid-a")[0] is True
    cache.put("valid-b", cached("key_b"))
    assert cache.get("valid-a") == (False, None)
    assert cache.get("bogus") == (True, None)


def test_negative_ttl_is_capped_by_the_cache_ttl() -> None:
    assert KeyCache(ttl_s=1.0).negatives.ttl_s == 1.0
    assert KeyCache(ttl_s=3600.0).negatives.ttl_s == NEGATIVE_TTL_S
    disabled = KeyCache(ttl_s=0)
    disabled.put("bogus", None)
    assert disabled.get("bogus") == (False, None)
