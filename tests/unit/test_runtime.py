"""The server process's collector settings: startup objects frozen, a wider young generation,
and everything collectable again after ``unsettle``."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from forecourt import runtime


@pytest.fixture
def restored() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_settle_freezes_what_exists_and_widens_the_young_generation(restored: None) -> None:
    before = gc.get_threshold()
    survivor: list[object] = [object()]
    runtime.settle()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (runtime.YOUNG_THRESHOLD, before[1], before[2])
    # Frozen: in no generation the collector walks.
    assert not any(o is survivor for o in gc.get_objects())

    runtime.unsettle()
    assert gc.get_freeze_count() == 0
    assert any(o is survivor for o in gc.get_objects())
    assert gc.get_threshold() == before
