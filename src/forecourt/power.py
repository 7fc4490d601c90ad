"""Who may act on whom: the one order between principals.

A principal's power is its expanded scope set, its rate-limit tier, its effective limits (the
tier's windows overridden by its own) and its expiry. One power *covers* another when it is at
least as large on every axis:

- scopes: the other's expanded scopes are a subset of this one's;
- tier: the other tier's limits are, window by window, no higher than this tier's;
- limits: every window this one is limited in, the other is limited in too, no higher;
- expiry: the other expires no later (a power without expiry is the largest).

``None`` for a tier, limits or expiry means "unbounded" (a signed-in user or Forecourt itself:
they have no tier and no expiry of their own).

The rules built on it:

- Acting on an existing key (update, rotate, revoke, usage) needs its scopes to be a subset of
  the caller's; a refusal says nothing of what the key holds (``KEY_REFUSED``, one message).
  Rotating another key hands its new secret to the caller, so it needs the whole key to be
  one the caller could have made (``check_may_take_over``).
- What a key hands out (a new key, or new values on another key) is covered by its own power;
  a holder of ``admin`` may hand out any tier and limits, never a later expiry.
- A key changing itself never raises its own tier or limits nor extends its expiry, ``admin`` or
  not.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from forecourt import scopes as scope_rules
from forecourt.errors import Forbidden

KEY_REFUSED = "Your credentials cannot act on this key."
USER_REFUSED = "Your credentials cannot act on this user."
EXPIRY_REFUSED = "A key's expiry cannot be later than that of the credentials that set it."
TIER_REFUSED = "A key's tier cannot be higher than that of the credentials that set it."
LIMITS_REFUSED = "A key's rate limits cannot be higher than those of the credentials that set it."
SELF_EXPIRY_REFUSED = "A key cannot extend its own expiry."
SELF_TIER_REFUSED = "A key cannot raise its own tier."
SELF_LIMITS_REFUSED = "A key cannot raise its own rate limits."


@dataclass(frozen=True, slots=True)
class Power:
    """What a principal may do and how much: see the module docstring for the order."""

    scopes: frozenset[str]
    tier_limits: Mapping[str, int] | None = None  # the tier's own windows; None: unbounded
    limits: Mapping[str, int] | None = None  # effective windows; None: unbounded
    expires_at: datetime | None = None  # None: never expires

    @property
    def is_admin(self) -> bool:
        return scope_rules.ADMIN in self.scopes


def key_power(
    scopes: Iterable[str],
    tier_limits: Mapping[str, int],
    overrides: Mapping[str, int],
    expires_at: datetime | None,
) -> Power:
    """The power of a key from its stored fields (scopes as stored: they are expanded here)."""
    return Power(
        scopes=scope_rules.expand(scopes),
        tier_limits=dict(tier_limits),
        limits=effective_limits(tier_limits, overrides),
        expires_at=aware(expires_at),
    )


def effective_limits(
    tier_limits: Mapping[str, int], overrides: Mapping[str, int]
) -> dict[str, int]:
    """The windows that apply to a key: its tier's, each overridden by the key's own."""
    return {**tier_limits, **overrides}


def aware(when: datetime | None) -> datetime | None:
    """``when`` with a time zone (a naive value is taken as UTC)."""
    if when is not None and when.tzinfo is None:
        return when.replace(tzinfo=UTC)
    return when


def scopes_cover(bound: Iterable[str], scopes: Iterable[str]) -> bool:
    """Whether ``bound`` (expanded) holds every scope that ``scopes`` grant."""
    return scope_rules.expand(scopes) <= frozenset(bound)


def limits_cover(bound: Mapping[str, int] | None, limits: Mapping[str, int] | None) -> bool:
    """Whether ``limits`` are no higher than ``bound`` in every window ``bound`` limits.

    A window missing from ``limits`` is unlimited there, so it exceeds any finite bound.
    """
    if bound is None:
        return True
    if limits is None:
        return False
    return all(name in limits and limits[name] <= limit for name, limit in bound.items())


def expiry_covers(bound: datetime | None, expires_at: datetime | None) -> bool:
    """Whether ``expires_at`` is no later than ``bound`` (None: never expires)."""
    bound, expires_at = aware(bound), aware(expires_at)
    if bound is None:
        return True
    return expires_at is not None and expires_at <= bound


def covers(actor: Power, target: Power) -> bool:
    """Whether ``actor`` is at least as powerful as ``target`` on every axis."""
    return (
        target.scopes <= actor.scopes
        and limits_cover(actor.tier_limits, target.tier_limits)
        and limits_cover(actor.limits, target.limits)
        and expiry_covers(actor.expires_at, target.expires_at)
    )


def check_may_act_on_key(actor_scopes: Iterable[str], target_scopes: Iterable[str]) -> None:
    """Forbidden, with one message whatever the key holds, unless the caller holds every scope
    the key grants."""
    if not scopes_cover(actor_scopes, target_scopes):
        raise Forbidden(KEY_REFUSED)


def may_hand_out(creator: Power, target: Power) -> bool:
    """Whether ``creator`` could have made ``target``: its scopes, an expiry no later than the
    creator's and, unless the creator holds ``admin``, no higher tier or limits."""
    if not (
        target.scopes <= creator.scopes and expiry_covers(creator.expires_at, target.expires_at)
    ):
        return False
    return creator.is_admin or (
        limits_cover(creator.tier_limits, target.tier_limits)
        and limits_cover(creator.limits, target.limits)
    )


def check_may_take_over(actor: Power, target: Power) -> None:
    """Forbidden (``KEY_REFUSED``) unless ``actor`` could have made ``target``: a call that
    hands the caller the key's secret (a rotation) must not give it more than it holds."""
    if not may_hand_out(actor, target):
        raise Forbidden(KEY_REFUSED)


def check_grant(actor_scopes: Iterable[str], requested: Iterable[str]) -> None:
    """Forbidden unless the caller holds every scope that ``requested`` grant (``admin``
    included: granting it needs it; ``system:admin`` needs ``system:admin``)."""
    held = frozenset(actor_scopes)
    for scope in sorted(scope_rules.expand(requested) - held):
        raise Forbidden(f"You cannot grant {scope!r}: your credentials do not hold it.")


def check_child_key(
    creator: Power,
    *,
    tier_limits: Mapping[str, int] | None = None,
    limits: Mapping[str, int] | None = None,
    expires_at: datetime | None = None,
    check_expiry: bool = True,
) -> None:
    """Forbidden if values handed out by ``creator`` exceed its own power.

    Pass only what is being set: ``tier_limits`` (the new tier's windows), ``limits`` (the new
    effective windows) and, with ``check_expiry``, the new ``expires_at``. A creator holding
    ``admin`` may hand out any tier and limits; never an expiry later than its own.
    """
    if check_expiry and not expiry_covers(creator.expires_at, expires_at):
        raise Forbidden(EXPIRY_REFUSED)
    if creator.is_admin:
        return
    if tier_limits is not None and not limits_cover(creator.tier_limits, tier_limits):
        raise Forbidden(TIER_REFUSED)
    if limits is not None and not limits_cover(creator.limits, limits):
        raise Forbidden(LIMITS_REFUSED)


def check_self_update(
    current: Power,
    *,
    tier_limits: Mapping[str, int] | None = None,
    limits: Mapping[str, int] | None = None,
    expires_at: datetime | None = None,
    check_expiry: bool = True,
) -> None:
    """Forbidden if a key's change to itself extends its expiry or raises its tier or limits,
    whatever scopes it holds."""
    if check_expiry and not expiry_covers(current.expires_at, expires_at):
        raise Forbidden(SELF_EXPIRY_REFUSED)
    if tier_limits is not None and not limits_cover(current.tier_limits, tier_limits):
        raise Forbidden(SELF_TIER_REFUSED)
    if limits is not None and not limits_cover(current.limits, limits):
        raise Forbidden(SELF_LIMITS_REFUSED)


def role_covered(actor_scopes: Iterable[str], role_scopes: Iterable[str]) -> bool:
    """Whether a key holding ``actor_scopes`` holds every scope of a role."""
    return frozenset(role_scopes) <= frozenset(actor_scopes)


def rank_covers(actor_rank: int, target_rank: int) -> bool:
    """Whether a user of ``actor_rank`` outranks or equals one of ``target_rank``."""
    return actor_rank >= target_rank
