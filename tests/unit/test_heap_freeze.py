"""intake.heap_freeze: objects older than a long intake are set aside from the cycle
collector while it runs, and handed back when the last one ends, whatever happens."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from intake.heap_freeze import older_objects_frozen


@pytest.fixture(autouse=True)
def no_foreign_freeze() -> Iterator[None]:
    """Start with nothing frozen: an engine loaded earlier in the test session (vLLM
    freezes its start-up heap) is frozen again afterwards."""
    foreign = gc.get_freeze_count() > 0
    gc.unfreeze()
    yield
    if foreign:
        gc.freeze()


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_older_objects_are_frozen_until_the_last_intake_ends() -> None:
    assert gc.get_freeze_count() == 0
    with older_objects_frozen():
        frozen = gc.get_freeze_count()
        assert frozen > 0
        with older_objects_frozen():  # a second intake at once freezes nothing more
            assert gc.get_freeze_count() == frozen
        assert gc.get_freeze_count() == frozen  # the first is still running
    assert gc.get_freeze_count() == 0


def test_an_intake_that_raises_still_unfreezes() -> None:
    with pytest.raises(RuntimeError), older_objects_frozen():
        raise RuntimeError("bad row")
    assert gc.get_freeze_count() == 0


def test_new_cycles_are_collected_during_it_and_older_ones_after_it() -> None:
    older = _Cycle()
    older_ref = weakref.ref(older)
    with older_objects_frozen():
        newer = _Cycle()
        newer_ref = weakref.ref(newer)
        del older, newer
        gc.collect()
        assert newer_ref() is None
        assert older_ref() is not None  # set aside: it waits for the unfreeze
    gc.collect()
    assert older_ref() is None


def test_a_freeze_someone_else_made_is_left_to_them() -> None:
    gc.freeze()  # as an engine in the same process does at start-up
    try:
        before = gc.get_freeze_count()
        with older_objects_frozen():
            assert gc.get_freeze_count() == before
        assert gc.get_freeze_count() == before  # not handed back by the intake
    finally:
        gc.unfreeze()
