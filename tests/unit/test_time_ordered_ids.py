"""models.fast_rows.time_ordered_ids: UUIDv7s that sort in the order they were made."""

from __future__ import annotations

import time
import uuid

from models.fast_rows import time_ordered_ids


def test_ids_are_version_7_unique_and_ordered() -> None:
    first = time_ordered_ids(1000)
    time.sleep(0.002)  # the next call is a later millisecond
    second = time_ordered_ids(1000)
    both = first + second
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in both)
    assert len(set(both)) == 2000
    assert both == sorted(both)


def test_ids_carry_the_time_they_were_made() -> None:
    before = time.time_ns() // 1_000_000
    (made,) = time_ordered_ids(1)
    after = time.time_ns() // 1_000_000
    assert before <= made.int >> 80 <= after


def test_calls_in_the_same_millisecond_draw_apart() -> None:
    calls = [time_ordered_ids(3) for _ in range(200)]
    assert len({i for ids in calls for i in ids}) == 600
