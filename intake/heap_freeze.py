"""Keeping Python's cycle collector off the objects a long intake did not make.

Queueing a large file keeps a few chunks of jobs alive at a time, long enough for the
collector to move them to its oldest generation; each time enough of them pile up there, it
runs a full collection, which walks every object in the process (the modules, the ORM's
metadata, the settings: hundreds of thousands) to free a few dead chunks. That was about
a quarter of the CPU of CSV intake. `gc.freeze()` sets the objects that exist now aside
from every collection; `gc.unfreeze()` hands them back. While frozen, objects that die by
reference count are still freed at once; only cycles among the set-aside objects wait for
the unfreeze. Frozen objects are never copied or moved, so nothing else changes.

Several intakes may run at once (threads of one server): the first one in freezes, the last
one out unfreezes. An engine in the same process may have frozen its own start-up heap
(vLLM does): `gc.unfreeze()` cannot tell whose objects it hands back, so when objects are
already frozen as the first intake starts, intakes leave the collector as it is.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class _Freezes:
    """How many blocks run with older objects frozen, under a lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active = 0
        self.ours = False  # whether the running blocks' freeze is theirs to undo


_freezes = _Freezes()


@contextmanager
def older_objects_frozen() -> Iterator[None]:
    """Run the block with every object that exists when it starts out of the cycle
    collector's walks (see the module's docstring); the last block out unfreezes what
    the first froze. Objects someone else froze first (an engine's start-up heap) stay
    theirs: then the blocks freeze and unfreeze nothing."""
    with _freezes.lock:
        if _freezes.active == 0:
            _freezes.ours = gc.get_freeze_count() == 0
            if _freezes.ours:
                gc.freeze()
        _freezes.active += 1
    try:
        yield
    finally:
        with _freezes.lock:
            _freezes.active -= 1
            if _freezes.active == 0 and _freezes.ours:
                gc.unfreeze()
