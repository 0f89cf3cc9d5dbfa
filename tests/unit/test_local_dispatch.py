"""workers.inprocess.LocalDispatcher: the in-process doorbell, one queue per model."""

from __future__ import annotations

import uuid

from workers.inprocess import LocalDispatcher


def test_a_batch_goes_to_its_models_queue() -> None:
    dispatcher = LocalDispatcher(["chat", "embed"])
    batch_id = uuid.uuid4()
    dispatcher.dispatch(batch_id, "embed", worker="anyone")
    assert dispatcher.queues["embed"].get_nowait() == batch_id
    assert dispatcher.queues["chat"].empty()


def test_a_batch_of_a_model_this_process_does_not_run_is_left_alone() -> None:
    # The sweeper re-sends stale batches of every model; it must not fail on one it
    # cannot serve (an embeddings batch while only a chat engine is loaded).
    dispatcher = LocalDispatcher(["chat"])
    dispatcher.dispatch(uuid.uuid4(), "embed")
    assert dispatcher.queues["chat"].empty() and set(dispatcher.queues) == {"chat"}
