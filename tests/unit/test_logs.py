"""The logging set-up: JSON lines and text lines carrying the ids of what a record is
about, from the call site, from a `log_context`, and from the process's role."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator

import pytest

from observability.logs import configure_logging, log_context, logs_about_batch

log = logging.getLogger("penny.test")


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VLLM_CONFIGURE_LOGGING", "1")  # restored: the engine tests' own
        yield
    logging.captureWarnings(False)
    root.handlers[:] = handlers
    root.setLevel(level)


def json_lines(err: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in err.splitlines()]


def test_json_lines_carry_role_context_and_call_site_ids(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("json", verbose=True, role="worker", model="tiny")
    with log_context(batch_id="b-1", submission_id="s-1"):
        log.info("ran %d jobs", 3, extra={"job_id": "j-9", "submission_id": "s-2"})
    log.warning("outside")

    inside, outside = json_lines(capsys.readouterr().err)
    assert inside["message"] == "ran 3 jobs"
    assert inside["level"] == "INFO"
    assert inside["logger"] == "penny.test"
    assert inside["role"] == "worker"
    # The call site's own id wins over the context's.
    assert {k: inside[k] for k in ("job_id", "batch_id", "submission_id", "model")} == {
        "job_id": "j-9", "batch_id": "b-1", "submission_id": "s-2", "model": "tiny"}
    assert "batch_id" not in outside and outside["model"] == "tiny"
    assert str(inside["time"]).endswith("+00:00")


def test_json_lines_keep_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("json")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("it failed")
    (line,) = json_lines(capsys.readouterr().err)
    assert line["level"] == "ERROR"
    assert "ValueError: boom" in str(line["exception"])


def test_text_lines_append_the_ids(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("text", verbose=False)
    with log_context(batch_id="b-2"):
        log.info("hidden below WARNING")
        log.warning("lease lost")
    (line,) = capsys.readouterr().err.splitlines()
    assert line.endswith("WARNING penny.test: lease lost [batch_id=b-2]")


def test_a_method_about_a_batch_logs_inside_its_context(
    capsys: pytest.CaptureFixture[str],
) -> None:
    class Runner:
        @logs_about_batch
        def run(self, batch_id: uuid.UUID, note: str = "") -> str:
            log.warning("running %s", note)
            return note

    configure_logging("json")
    batch_id = uuid.uuid4()
    assert Runner().run(batch_id, note="x") == "x"
    log.warning("after")
    during, after = json_lines(capsys.readouterr().err)
    assert during["batch_id"] == str(batch_id)
    assert "batch_id" not in after
