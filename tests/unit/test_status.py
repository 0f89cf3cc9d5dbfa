"""models.status: terminal states and legal job moves."""

from __future__ import annotations

import pytest

from models.status import JOB_TRANSITIONS, TERMINAL_JOB_STATUSES, JobStatus, can_move

TERMINAL = sorted(TERMINAL_JOB_STATUSES)


def test_terminal_statuses() -> None:
    assert {s.value for s in TERMINAL_JOB_STATUSES} == {
        "succeeded", "failed", "cancelled", "expired", "escalated",
    }


@pytest.mark.parametrize(
    ("status", "terminal"),
    [
        (JobStatus.QUEUED, False),
        (JobStatus.BATCHED, False),
        (JobStatus.RUNNING, False),
        (JobStatus.SUCCEEDED, True),
        (JobStatus.FAILED, True),
        (JobStatus.CANCELLED, True),
        (JobStatus.EXPIRED, True),
    ],
)
def test_is_terminal(status: JobStatus, terminal: bool) -> None:
    assert status.is_terminal is terminal


def test_every_status_has_a_transition_entry() -> None:
    assert set(JOB_TRANSITIONS) == set(JobStatus)


@pytest.mark.parametrize("current", TERMINAL)
@pytest.mark.parametrize("target", list(JobStatus))
def test_no_move_out_of_a_terminal_state(current: JobStatus, target: JobStatus) -> None:
    assert can_move(current, target) is False


@pytest.mark.parametrize(
    ("current", "target", "allowed"),
    [
        (JobStatus.QUEUED, JobStatus.BATCHED, True),
        (JobStatus.BATCHED, JobStatus.RUNNING, True),
        (JobStatus.RUNNING, JobStatus.SUCCEEDED, True),
        (JobStatus.RUNNING, JobStatus.FAILED, True),
        (JobStatus.QUEUED, JobStatus.CANCELLED, True),
        (JobStatus.BATCHED, JobStatus.QUEUED, True),  # sweeper: lost lease
        (JobStatus.RUNNING, JobStatus.BATCHED, True),  # sweeper: lost lease
        (JobStatus.QUEUED, JobStatus.RUNNING, False),
        (JobStatus.QUEUED, JobStatus.SUCCEEDED, False),
        (JobStatus.BATCHED, JobStatus.SUCCEEDED, False),
        (JobStatus.RUNNING, JobStatus.QUEUED, False),
        (JobStatus.QUEUED, JobStatus.QUEUED, False),
        (JobStatus.RUNNING, JobStatus.RUNNING, False),
    ],
)
def test_can_move(current: JobStatus, target: JobStatus, allowed: bool) -> None:
    assert can_move(current, target) is allowed


@pytest.mark.parametrize("current", [s for s in JobStatus if not s.is_terminal])
def test_every_live_state_can_end(current: JobStatus) -> None:
    assert {JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.EXPIRED} <= JOB_TRANSITIONS[current]
