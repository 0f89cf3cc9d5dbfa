"""Recording a batch while the engine runs the next one (embedded mode).

A batch's results, ledger rows and output files are written after its engine call; done on
the worker's own thread, the engine waits for those writes before it starts the next batch.
Handed to this recorder instead, they are written while the next batch generates. Records
run one at a time in the order batches ran; at most one batch waits to be recorded, so a
worker handing over another waits (memory stays bounded). The batch's lease is renewed
until its recording starts. A recording that fails leaves the batch running in the
database: its lease runs out and the sweeper sends it again, as when the process dies
before recording; the claim token keeps a late write from counting twice.
"""

from __future__ import annotations

import contextvars
import logging
import queue
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class BackgroundRecorder:
    def __init__(self) -> None:
        self._work: queue.Queue[Callable[[], object] | None] = queue.Queue(maxsize=1)
        self._thread = threading.Thread(target=self._loop, name="recorder", daemon=True)
        self._started = False

    def start(self) -> None:
        self._thread.start()
        self._started = True

    def submit(self, record: Callable[[], object]) -> None:
        """Record later, on the recorder's thread; waits while another batch waits."""
        if not self._started:  # not running (yet, or any more): record here and now
            record()
            return
        context = contextvars.copy_context()  # its log lines still name the batch
        self._work.put(lambda: context.run(record))

    def close(self) -> None:
        """Record everything handed over, then stop."""
        if not self._started:
            return
        self._work.put(None)
        self._thread.join()
        self._started = False

    def _loop(self) -> None:
        while True:
            record = self._work.get()
            if record is None:
                return
            try:
                record()
            except Exception:  # the sweeper sends the batch again after its lease
                log.exception("recording a batch failed")
