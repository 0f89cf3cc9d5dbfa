"""The pure parts of failing over and retrying: how a batch is halved, what a given-up job
says, and the pauses between database retries."""

from __future__ import annotations

import uuid

from models.failover import MAX_REASON_CHARS, engine_failure_message, halves
from models.queue import ClaimedJob
from models.retrying import MAX_PAUSE_SECONDS, pauses


def _jobs(count: int) -> list[ClaimedJob]:
    tenant, submission = uuid.uuid4(), uuid.uuid4()
    return [ClaimedJob(uuid.uuid4(), tenant, submission, {"n": i}) for i in range(count)]


def test_halves_keep_the_planners_order_and_every_job() -> None:
    for count in (2, 3, 8, 9):
        jobs = _jobs(count)
        first, second = halves(jobs)
        assert first + second == jobs
        assert len(first) - len(second) in (0, 1)
        assert first and second


def test_a_given_up_job_says_how_often_and_why_within_bounds() -> None:
    message = engine_failure_message("RuntimeError: " + "x" * 5000, 3)
    assert message.startswith("the engine failed on this request 3 time(s) when it ran alone")
    assert message.endswith("x")
    assert len(message) < MAX_REASON_CHARS + 200


def test_pauses_double_up_to_the_cap_and_end_with_the_window() -> None:
    next_pause = pauses(3600.0)
    seen = [next_pause() for _ in range(8)]
    assert seen == [0.2, 0.4, 0.8, 1.6, 3.2, MAX_PAUSE_SECONDS, MAX_PAUSE_SECONDS,
                    MAX_PAUSE_SECONDS]
    assert pauses(0.0)() is None  # no window: no retry at all
