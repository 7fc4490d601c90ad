"""The alert rule's state machine and fingerprints, as pure functions (Hypothesis)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from forecourt.alerts.rules import Reading, holds, step
from forecourt.alerts.service import fingerprint

T0 = datetime(2026, 1, 1, tzinfo=UTC)

evaluations = st.lists(
    st.tuples(st.integers(min_value=1, max_value=600), st.booleans()), min_size=1, max_size=40
)


@given(evaluations, st.integers(min_value=0, max_value=1800))
def test_fires_once_the_condition_has_held_for_the_duration(
    run: list[tuple[int, bool]], for_s: int
) -> None:
    """Against a direct reading of the run: a rule fires at the first evaluation at least
    ``for_s`` after the start of the current streak of holding evaluations, once per streak,
    and resolves at the first evaluation that does not hold after firing."""
    pending, firing = None, False
    now = T0
    streak_start: datetime | None = None
    fired_in_streak = False
    for gap, holding in run:
        now += timedelta(seconds=gap)
        decided = step(holding, pending, firing, for_s, now)
        if holding:
            if streak_start is None:
                streak_start, fired_in_streak = now, False
            due = (now - streak_start).total_seconds() >= for_s
            assert decided.fire == (due and not fired_in_streak and not firing)
            assert decided.pending_since == streak_start
            assert not decided.resolve
            fired_in_streak = fired_in_streak or decided.fire
        else:
            assert not decided.fire and decided.pending_since is None
            assert decided.resolve == firing
            streak_start = None
        pending = decided.pending_since
        firing = (firing or decided.fire) and not decided.resolve


@given(
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(allow_nan=False, allow_infinity=False),
)
def test_above_and_below_compare_strictly(value: float, threshold: float) -> None:
    reading = Reading(value, 1)
    assert holds("above", threshold, reading) == (value > threshold)
    assert holds("below", threshold, reading) == (value < threshold)
    assert not holds("absent", None, reading)
    assert holds("absent", None, Reading(None, 0))
    assert not holds("above", threshold, Reading(None, 0))


@given(st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=6), st.text(max_size=8))
def test_a_fingerprint_is_the_type_and_the_labels_in_any_order(
    labels: dict[str, str], type: str
) -> None:
    reordered = dict(reversed(list(labels.items())))
    assert fingerprint(type, labels) == fingerprint(type, reordered)
    assert fingerprint(type, labels) != fingerprint(type + "x", labels)
    assert fingerprint(type, labels) != fingerprint(type, {**labels, "zz_extra": "1"}) or (
        labels.get("zz_extra") == "1"
    )
