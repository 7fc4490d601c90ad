"""Which windows apply to a request: a key's tier merged with its overrides, or the IP limit."""

from __future__ import annotations

from collections.abc import Mapping

from forecourt.errors import InvalidInput
from forecourt.ratelimit.windows import STANDARD_WINDOWS, Window

MAX_LIMIT = 1_000_000_000


def validate_limits(limits: Mapping[str, int], field: str = "rate_limits") -> dict[str, int]:
    """The limits if every window name is known and every value positive; else InvalidInput."""
    for name, value in limits.items():
        if name not in STANDARD_WINDOWS:
            known = ", ".join(STANDARD_WINDOWS)
            raise InvalidInput(
                f"Unknown window {name!r}; use one of {known}.", field=f"{field}.{name}"
            )
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise InvalidInput("Limits must be positive integers.", field=f"{field}.{name}")
        if value > MAX_LIMIT:
            raise InvalidInput(f"Limits are at most {MAX_LIMIT}.", field=f"{field}.{name}")
    return dict(limits)


def to_windows(limits: Mapping[str, int]) -> tuple[Window, ...]:
    """Windows ordered from the shortest to the longest."""
    return tuple(
        Window(name, limit, STANDARD_WINDOWS[name])
        for name, limit in sorted(limits.items(), key=lambda item: STANDARD_WINDOWS[item[0]])
    )


class Policy:
    """Resolves windows for keys and anonymous callers; results are memoised."""

    def __init__(
        self,
        tiers: Mapping[str, Mapping[str, int]],
        default_tier: str,
        ip_limits: Mapping[str, int],
    ) -> None:
        if default_tier not in tiers:
            raise ValueError(f"default tier {default_tier!r} is not among the tiers")
        self.tiers = {name: dict(limits) for name, limits in tiers.items()}
        self.default_tier = default_tier
        self.ip_windows = to_windows(ip_limits)
        self._memo: dict[tuple[str, tuple[tuple[str, int], ...]], tuple[Window, ...]] = {}

    def for_key(self, tier: str | None, overrides: Mapping[str, int]) -> tuple[Window, ...]:
        tier_name = tier if tier in self.tiers else self.default_tier
        memo_key = (tier_name, tuple(sorted(overrides.items())))
        windows = self._memo.get(memo_key)
        if windows is None:
            windows = to_windows({**self.tiers[tier_name], **overrides})
            self._memo[memo_key] = windows
        return windows

    def check_tier(self, tier: str, field: str = "tier") -> str:
        if tier not in self.tiers:
            raise InvalidInput(
                f"Unknown tier {tier!r}; use one of {', '.join(self.tiers)}.", field=field
            )
        return tier
