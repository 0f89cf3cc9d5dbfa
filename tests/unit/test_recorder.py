"""workers.recorder: batches are recorded off the engine's thread, one at a time, in the
order they ran, with at most one waiting; closing records everything handed over."""

from __future__ import annotations

import contextvars
import threading

import pytest

from workers.recorder import BackgroundRecorder

batch_name: contextvars.ContextVar[str] = contextvars.ContextVar("batch_name", default="")


def test_records_run_in_order_on_another_thread_and_close_drains_them() -> None:
    recorder = BackgroundRecorder()
    recorder.start()
    release = threading.Event()
    seen: list[tuple[int, str]] = []

    def record(number: int) -> None:
        if number == 0:
            release.wait(timeout=30)
        seen.append((number, threading.current_thread().name))

    recorder.submit(lambda: record(0))  # being recorded: blocks on `release`
    recorder.submit(lambda: record(1))  # waits its turn
    handed = threading.Event()

    def third() -> None:  # the queue is full: handing over waits
        recorder.submit(lambda: record(2))
        handed.set()

    threading.Thread(target=third, daemon=True).start()
    assert not handed.wait(timeout=0.3)
    release.set()
    assert handed.wait(timeout=30)
    recorder.close()
    assert [n for n, _ in seen] == [0, 1, 2]
    assert {thread for _, thread in seen} == {"recorder"}


def test_a_failed_record_does_not_stop_the_next(caplog: pytest.LogCaptureFixture) -> None:
    recorder = BackgroundRecorder()
    recorder.start()
    done: list[str] = []

    def fails() -> None:
        raise RuntimeError("the database went away")

    recorder.submit(fails)
    recorder.submit(lambda: done.append("next"))
    recorder.close()
    assert done == ["next"]
    assert "recording a batch failed" in caplog.text


def test_a_record_keeps_the_context_it_was_handed_over_in() -> None:
    recorder = BackgroundRecorder()
    recorder.start()
    seen: list[str] = []
    token = batch_name.set("batch-7")
    try:
        recorder.submit(lambda: seen.append(batch_name.get()))
    finally:
        batch_name.reset(token)
    recorder.close()
    assert seen == ["batch-7"]


def test_without_its_thread_it_records_at_once_on_the_callers() -> None:
    recorder = BackgroundRecorder()
    seen: list[str] = []
    recorder.submit(lambda: seen.append(threading.current_thread().name))
    assert seen == [threading.current_thread().name]
    recorder.start()
    recorder.close()
    recorder.submit(lambda: seen.append("after close"))
    assert seen[-1] == "after close"
