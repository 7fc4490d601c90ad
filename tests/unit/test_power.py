"""The order between principals: scopes, tier, limits and expiry, and the rules built on it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from forecourt import power
from forecourt import scopes as scope_rules
from forecourt.errors import Forbidden
from forecourt.ratelimit.windows import STANDARD_WINDOWS

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
FREE = {"minute": 60, "hour": 1_000, "day": 10_000}
PRO = {"minute": 600, "hour": 20_000, "day": 200_000}

window_names = st.sampled_from(sorted(STANDARD_WINDOWS))
limit_values = st.integers(min_value=1, max_value=10**9)
limit_maps = st.dictionaries(window_names, limit_values, max_size=len(STANDARD_WINDOWS))
expiries = st.none() | st.integers(min_value=-(10**7), max_value=10**7).map(
    lambda s: EPOCH + timedelta(seconds=s)
)
scope_sets = st.frozensets(st.sampled_from(sorted(scope_rules.ALL_SCOPES)), max_size=6)


def later(a: datetime | None, b: datetime | None) -> bool:
    """Whether ``b`` is strictly later than ``a`` (None: never expires, the latest)."""
    if b is None:
        return a is not None
    return a is not None and b > a


# -- limits ---------------------------------------------------------------------------------


@given(limit_maps, limit_maps)
def test_limits_cover_is_windowwise_no_higher(
    bound: dict[str, int], limits: dict[str, int]
) -> None:
    expected = all(name in limits and limits[name] <= value for name, value in bound.items())
    assert power.limits_cover(bound, limits) is expected


@given(limit_maps)
def test_limits_cover_themselves_and_unbounded_covers_all(limits: dict[str, int]) -> None:
    assert power.limits_cover(limits, limits)
    assert power.limits_cover(None, limits)
    assert power.limits_cover(None, None)


@given(limit_maps.filter(bool), window_names, st.integers(min_value=1, max_value=10**6))
def test_raising_any_bounded_window_is_not_covered(
    bound: dict[str, int], name: str, extra: int
) -> None:
    if name not in bound:
        name = sorted(bound)[0]
    raised = {**bound, name: bound[name] + extra}
    assert not power.limits_cover(bound, raised)
    # Dropping a bounded window makes it unlimited there: not covered either.
    dropped = {k: v for k, v in bound.items() if k != name}
    assert not power.limits_cover(bound, dropped)
    assert not power.limits_cover(bound, None)


@given(limit_maps, limit_maps, limit_maps)
def test_limits_order_is_transitive(
    a: dict[str, int], b: dict[str, int], c: dict[str, int]
) -> None:
    if power.limits_cover(a, b) and power.limits_cover(b, c):
        assert power.limits_cover(a, c)


@given(limit_maps, limit_maps)
def test_effective_limits_take_the_overrides(
    tier: dict[str, int], overrides: dict[str, int]
) -> None:
    effective = power.effective_limits(tier, overrides)
    assert set(effective) == set(tier) | set(overrides)
    for name, value in effective.items():
        assert value == overrides.get(name, tier.get(name))


# -- expiry ---------------------------------------------------------------------------------


@given(expiries, expiries)
def test_expiry_covers_exactly_when_not_later(
    bound: datetime | None, when: datetime | None
) -> None:
    assert power.expiry_covers(bound, when) is not later(bound, when)


@given(expiries)
def test_naive_times_are_utc(when: datetime | None) -> None:
    naive = when.replace(tzinfo=None) if when is not None else None
    assert power.expiry_covers(when, naive)
    assert power.expiry_covers(naive, when)


def test_no_expiry_is_the_latest() -> None:
    assert power.expiry_covers(None, None)
    assert power.expiry_covers(None, EPOCH)
    assert not power.expiry_covers(EPOCH, None)


# -- the whole order ------------------------------------------------------------------------


@given(scope_sets, limit_maps, limit_maps, expiries)
def test_a_key_covers_itself(
    scopes: frozenset[str], tier: dict[str, int], overrides: dict[str, int], exp: datetime | None
) -> None:
    key = power.key_power(scopes, tier, overrides, exp)
    assert power.covers(key, key)


@given(scope_sets, scope_sets, limit_maps, limit_maps, expiries, expiries)
def test_covers_needs_every_axis(
    a_scopes: frozenset[str],
    b_scopes: frozenset[str],
    a_limits: dict[str, int],
    b_limits: dict[str, int],
    a_exp: datetime | None,
    b_exp: datetime | None,
) -> None:
    a = power.key_power(a_scopes, a_limits, {}, a_exp)
    b = power.key_power(b_scopes, b_limits, {}, b_exp)
    expected = (
        scope_rules.expand(b_scopes) <= scope_rules.expand(a_scopes)
        and power.limits_cover(a_limits, b_limits)
        and not later(a_exp, b_exp)
    )
    assert power.covers(a, b) is expected


def test_admin_does_not_cover_the_operator_scope() -> None:
    admin = power.Power(scope_rules.expand(["admin"]))
    operator = power.Power(scope_rules.expand(["admin", scope_rules.SYSTEM_ADMIN]))
    assert not power.covers(admin, operator)
    assert power.covers(operator, admin)
    assert power.scopes_cover(admin.scopes, [scope_rules.WEBHOOK_SECRETS])
    assert not power.scopes_cover(
        scope_rules.expand(["webhooks:write"]), [scope_rules.WEBHOOK_SECRETS]
    )


# -- the rules ------------------------------------------------------------------------------


def test_acting_on_a_key_needs_its_scopes_and_says_nothing_of_them() -> None:
    writer = scope_rules.expand(["keys:write"])
    power.check_may_act_on_key(writer, ["keys:read"])
    power.check_may_act_on_key(writer, ["keys:write"])
    messages = set()
    for target in (["admin"], ["events:publish"], ["keys:write", "users:write"]):
        with pytest.raises(Forbidden) as caught:
            power.check_may_act_on_key(writer, target)
        messages.add(caught.value.detail)
    assert messages == {power.KEY_REFUSED}


def test_granting_needs_what_is_granted() -> None:
    admin = scope_rules.expand(["admin"])
    power.check_grant(admin, ["admin"])
    with pytest.raises(Forbidden):
        power.check_grant(admin, [scope_rules.SYSTEM_ADMIN])
    power.check_grant(scope_rules.expand(["admin", scope_rules.SYSTEM_ADMIN]), ["system:admin"])
    with pytest.raises(Forbidden):
        power.check_grant(scope_rules.expand(["keys:write", "events:read"]), ["admin"])


@given(expiries, expiries)
def test_a_child_expires_no_later_than_its_creator_even_for_admin(
    creator_exp: datetime | None, child_exp: datetime | None
) -> None:
    for scopes in (["keys:write"], ["admin"]):
        creator = power.key_power(scopes, FREE, {}, creator_exp)
        if later(creator_exp, child_exp):
            with pytest.raises(Forbidden) as caught:
                power.check_child_key(creator, expires_at=child_exp)
            assert caught.value.detail == power.EXPIRY_REFUSED
        else:
            power.check_child_key(creator, expires_at=child_exp)


@given(limit_maps, limit_maps)
def test_a_child_has_limits_no_higher_unless_the_creator_is_admin(
    overrides: dict[str, int], child_overrides: dict[str, int]
) -> None:
    creator = power.key_power(["keys:write"], FREE, overrides, None)
    child = power.effective_limits(FREE, child_overrides)
    if power.limits_cover(creator.limits, child):
        power.check_child_key(creator, limits=child)
    else:
        with pytest.raises(Forbidden):
            power.check_child_key(creator, limits=child)
    admin = power.key_power(["admin"], FREE, overrides, None)
    power.check_child_key(admin, tier_limits=PRO, limits=child)


def test_a_child_tier_is_no_higher_unless_the_creator_is_admin() -> None:
    creator = power.key_power(["keys:write"], FREE, {}, None)
    power.check_child_key(creator, tier_limits=FREE)
    with pytest.raises(Forbidden) as caught:
        power.check_child_key(creator, tier_limits=PRO)
    assert caught.value.detail == power.TIER_REFUSED
    pro = power.key_power(["keys:write"], PRO, {}, None)
    power.check_child_key(pro, tier_limits=FREE)


@given(limit_maps, limit_maps, expiries, expiries)
def test_a_key_never_raises_itself_even_as_admin(
    overrides: dict[str, int],
    new_overrides: dict[str, int],
    exp: datetime | None,
    new_exp: datetime | None,
) -> None:
    me = power.key_power(["admin"], FREE, overrides, exp)
    new_limits = power.effective_limits(FREE, new_overrides)
    raises = not power.limits_cover(me.limits, new_limits)
    extends = later(exp, new_exp)
    if raises:
        with pytest.raises(Forbidden) as caught:
            power.check_self_update(me, limits=new_limits, check_expiry=False)
        assert caught.value.detail == power.SELF_LIMITS_REFUSED
    else:
        power.check_self_update(me, limits=new_limits, check_expiry=False)
    if extends:
        with pytest.raises(Forbidden) as caught:
            power.check_self_update(me, expires_at=new_exp)
        assert caught.value.detail == power.SELF_EXPIRY_REFUSED
    else:
        power.check_self_update(me, expires_at=new_exp)
    with pytest.raises(Forbidden):
        power.check_self_update(me, tier_limits=PRO, check_expiry=False)


def test_roles_and_ranks() -> None:
    assert power.rank_covers(3, 3)
    assert power.rank_covers(3, 0)
    assert not power.rank_covers(1, 2)
    assert power.role_covered(scope_rules.expand(["admin"]), scope_rules.TENANT_SCOPES)
    assert not power.role_covered(scope_rules.expand(["users:write"]), {"users:read", "x:y"})


@given(scope_sets, limit_maps, limit_maps, expiries, expiries, st.booleans())
def test_taking_over_a_key_needs_all_of_its_power(
    scopes: frozenset[str],
    creator_limits: dict[str, int],
    target_limits: dict[str, int],
    creator_exp: datetime | None,
    target_exp: datetime | None,
    admin: bool,
) -> None:
    creator_scopes = {*scopes, "admin"} if admin else scopes
    creator = power.key_power(creator_scopes, creator_limits, {}, creator_exp)
    target = power.key_power(scopes, target_limits, {}, target_exp)
    expected = not later(creator_exp, target_exp) and (
        creator.is_admin or power.limits_cover(creator_limits, target_limits)
    )
    assert power.may_hand_out(creator, target) is expected
    if expected:
        power.check_may_take_over(creator, target)
    else:
        with pytest.raises(Forbidden) as caught:
            power.check_may_take_over(creator, target)
        assert caught.value.detail == power.KEY_REFUSED
