"""intake.read_ahead: items made on another thread, in order, a bounded way ahead."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from intake.read_ahead import read_ahead


def counted(n: int, made: list[int]) -> Iterator[int]:
    for i in range(n):
        made.append(i)
        yield i


def test_items_come_in_order_made_on_another_thread() -> None:
    threads: set[str] = set()

    def items() -> Iterator[int]:
        for i in range(500):
            threads.add(threading.current_thread().name)
            yield i

    assert list(read_ahead(items(), 3)) == list(range(500))
    assert threads == {"read-ahead"}


def test_the_producer_stays_within_its_depth() -> None:
    made: list[int] = []
    reader = read_ahead(counted(100, made), 2)
    assert next(reader) == 0
    time.sleep(0.3)  # room for the producer to run as far ahead as it may
    # One handed over, two waiting in the queue, one made and waiting for room.
    assert len(made) <= 4
    reader.close()


def test_an_error_is_raised_where_its_item_would_have_been() -> None:
    def items() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("line 3 is bad")

    got: list[int] = []
    with pytest.raises(ValueError, match="line 3 is bad"):
        for item in read_ahead(items(), 2):
            got.append(item)
    assert got == [1, 2]


def test_closing_early_stops_the_producer() -> None:
    made: list[int] = []
    reader = read_ahead(counted(10_000, made), 2)
    assert [next(reader) for _ in range(3)] == [0, 1, 2]
    reader.close()  # joins the producer
    stopped_at = len(made)
    time.sleep(0.3)
    assert len(made) == stopped_at < 10_000
    assert not any(t.name == "read-ahead" for t in threading.enumerate())
