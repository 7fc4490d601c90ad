"""The log ring: bounded, filtered by level and time, counted by level over the last hour,
credentials masked; and warnings still reach stderr when nothing else handles them."""

from __future__ import annotations

import logging

import pytest

from forecourt.observability.logring import MASK, LogRing, mask

START = 1_800_000_000.0


class FakeClock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


def record(
    level: int, message: str, name: str = "forecourt.test", at: float = START
) -> logging.LogRecord:
    entry = logging.LogRecord(name, level, __file__, 1, message, (), None)
    entry.created = at
    return entry


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("created fck_live_0123456789abcdefghij", "fck_live_0123456789abcdefghij"),
        ("rotated to whsec_c2VjcmV0LWNob3Nlbg==", "whsec_c2VjcmV0LWNob3Nlbg=="),
        ("header Authorization: Bearer abc.def-ghi", "abc.def-ghi"),
        ("password=hunter2hunter2", "hunter2hunter2"),
        ("{'api_key': 'k-123456789'}", "k-123456789"),
        ("session_token=tok_abcdefabcdef", "tok_abcdefabcdef"),
    ],
)
def test_credentials_are_masked(text: str, secret: str) -> None:
    masked = mask(text)
    assert secret not in masked and MASK in masked


def test_plain_text_is_kept() -> None:
    assert mask("delivered 3 deliveries to endpoint ep_123") == (
        "delivered 3 deliveries to endpoint ep_123"
    )


def test_ring_is_bounded_and_filtered() -> None:
    clock = FakeClock()
    ring = LogRing(capacity=5, clock=clock)
    for i in range(8):
        ring.handle(record(logging.INFO if i % 2 else logging.WARNING, f"m{i}", at=START + i))
    entries = ring.entries()
    assert [e.message for e in entries] == ["m3", "m4", "m5", "m6", "m7"]
    assert [e.message for e in ring.entries(level=logging.WARNING)] == ["m4", "m6"]
    assert [e.message for e in ring.entries(since=START + 5)] == ["m6", "m7"]
    assert [e.message for e in ring.entries(limit=2)] == ["m6", "m7"]


def test_counts_cover_the_last_hour() -> None:
    clock = FakeClock()
    ring = LogRing(capacity=3, clock=clock)
    for minute in range(90):
        clock.now = START + minute * 60
        ring.handle(record(logging.ERROR if minute % 10 == 0 else logging.INFO, "x"))
    counts = ring.counts()
    # Minutes 30..89: 60 records, of which 30, 40, ..., 80 are errors. The ring keeps only 3.
    assert counts["ERROR"] == 6 and counts["INFO"] == 54
    assert sum(counts.values()) == 60


def test_custom_levels_fold_into_standard_ones() -> None:
    ring = LogRing(clock=FakeClock())
    ring.handle(record(25, "between info and warning"))
    assert ring.entries()[0].level == "INFO"


def test_warnings_still_reach_stderr_alone(capsys: pytest.CaptureFixture[str]) -> None:
    ring = LogRing(clock=FakeClock())
    logger = logging.getLogger("forecourt_ringtest_alone")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(ring)
    try:
        logger.warning("heard on stderr")
        logger.info("not on stderr")
    finally:
        logger.removeHandler(ring)
    err = capsys.readouterr().err
    assert "heard on stderr" in err and "not on stderr" not in err
    assert [e.message for e in ring.entries()] == ["heard on stderr", "not on stderr"]
