"""Reading a file's next rows while the database writes the last ones.

Queueing a large file alternates two kinds of work: Python parsing rows into jobs, and
Postgres (another process, so another core) taking them through COPY. Done one after the
other, each waits for the other. `read_ahead` runs the parsing on a thread of its own, a
bounded number of chunks ahead of the writer, so the two overlap: while the writer's
thread waits on the database it holds no GIL, and the parser runs.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import TypeVar

T = TypeVar("T")

_ITEM, _END, _ERROR = "item", "end", "error"
_POLL_SECONDS = 0.1  # how soon a producer waiting for room sees that the reader stopped


def read_ahead(items: Iterator[T], depth: int) -> Iterator[T]:
    """Yield `items` in order, produced on another thread at most `depth` items ahead of
    the caller (so memory stays bounded). An exception raised while producing is raised
    here, where the item would have been. Closing this iterator early stops the
    producer after the item it is making."""
    box: queue.Queue[tuple[str, object]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(message: tuple[str, object]) -> bool:
        while not stop.is_set():
            try:
                box.put(message, timeout=_POLL_SECONDS)
            except queue.Full:
                continue
            return True
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((_ITEM, item)):
                    return
        except BaseException as error:  # handed to the reader, which raises it
            put((_ERROR, error))
            return
        put((_END, None))

    producer = threading.Thread(target=produce, name="read-ahead", daemon=True)
    producer.start()
    try:
        while True:
            kind, value = box.get()
            if kind == _ITEM:
                yield value  # type: ignore[misc]
            elif kind == _END:
                return
            else:
                assert isinstance(value, BaseException)
                raise value
    finally:
        stop.set()
        producer.join()
