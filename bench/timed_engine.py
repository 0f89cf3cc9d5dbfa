"""What the benchmarks see of the engine while penny drives it: when each `generate` call
started and ended, and whether one is running now.

The wrapper is an `Engine` itself, so the pipeline runs it unchanged. Knowing when the
engine is busy lets a benchmark wait for penny without querying Postgres while the engine
works (its own queries would be charged to penny), and shows where wall time went that the
engine did not use: before the first batch, between batches, after the last one.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from workers.engine import BatchGeneration, Engine, GenerationRequest


@dataclass(frozen=True)
class Call:
    started: float  # time.perf_counter()
    ended: float
    engine_seconds: float  # what the engine reported: LLM.generate alone
    requests: int


@dataclass(frozen=True)
class Timeline:
    """One penny run, from submitting its jobs to the last result recorded."""

    wall_seconds: float
    engine_seconds: float
    before_first: float  # submit -> first generate call
    between: float  # sum of the gaps between one call's end and the next one's start
    after_last: float  # last call's end -> done
    calls: int
    queries_beside: int  # SQL statements penny ran while the engine worked

    @property
    def busy_fraction(self) -> float:
        return self.engine_seconds / self.wall_seconds


class TimedEngine:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.calls: list[Call] = []
        self.busy = False
        self.queries_beside = 0  # SQL statements run while a generate call was running

    def count_queries(self, db: Any) -> Callable[[], None]:
        """Count the statements `db` (a SQLAlchemy engine) runs while the engine works:
        on few cores each one takes time from the engine. Returns the undo."""
        from sqlalchemy import event

        def counted(*_: object) -> None:
            if self.busy:
                self.queries_beside += 1

        event.listen(db, "before_cursor_execute", counted)
        return lambda: event.remove(db, "before_cursor_execute", counted)

    @property
    def model_name(self) -> str:
        return self.engine.model_name

    def prompt_token_ids(self, request: GenerationRequest) -> list[int]:
        return self.engine.prompt_token_ids(request)

    def generate(self, requests: Sequence[GenerationRequest]) -> BatchGeneration:
        self.busy = True
        started = time.perf_counter()
        try:
            generated = self.engine.generate(requests)
        finally:
            self.busy = False
        self.calls.append(Call(started, time.perf_counter(), generated.engine_seconds,
                               len(requests)))
        return generated

    def wait_until(self, done: Callable[[], bool], interval: float = 0.02) -> float:
        """Poll `done` only while no generate call runs; returns when it said True."""
        while True:
            if not self.busy and done():
                return time.perf_counter()
            time.sleep(interval)

    def timeline(self, submitted: float, finished: float) -> Timeline:
        calls = [c for c in self.calls if c.started >= submitted]
        gaps = sum(b.started - a.ended for a, b in itertools.pairwise(calls))
        return Timeline(
            wall_seconds=finished - submitted,
            engine_seconds=sum(c.engine_seconds for c in calls),
            before_first=calls[0].started - submitted if calls else 0.0,
            between=gaps,
            after_last=finished - calls[-1].ended if calls else 0.0,
            calls=len(calls),
            queries_beside=self.queries_beside,
        )
