"""The retry schedule: exponential backoff with jitter over hours, bounded attempts,
Retry-After honoured (within bounds), 410 disables, redirects are failures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from delivery.schedule import DeliveryStatus, RetryPolicy, decide, parse_retry_after

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
POLICY = RetryPolicy()


def test_backoff_grows_by_the_factor_up_to_the_cap() -> None:
    middle = [POLICY.backoff_seconds(n, 0.5) for n in range(1, 10)]
    assert middle[:7] == [30, 90, 270, 810, 2430, 7290, 21600]
    assert middle[7:] == [21600, 21600]
    # All retries of one event: about 21 hours between the first and the last attempt.
    assert sum(middle) / 3600 == pytest.approx(21.03, abs=0.01)


@pytest.mark.parametrize("attempt", [1, 4, 9])
def test_jitter_stays_within_a_quarter_of_the_nominal_delay(attempt: int) -> None:
    nominal = POLICY.backoff_seconds(attempt, 0.5)
    low, high = POLICY.backoff_seconds(attempt, 0.0), POLICY.backoff_seconds(attempt, 0.999)
    assert low == pytest.approx(0.75 * nominal)
    assert 0.75 * nominal < high <= 1.25 * nominal


@pytest.mark.parametrize(("code", "status", "disable"), [
    (200, DeliveryStatus.DELIVERED, False),
    (204, DeliveryStatus.DELIVERED, False),
    (410, DeliveryStatus.DISABLED, True),
    (500, DeliveryStatus.PENDING, False),
    (429, DeliveryStatus.PENDING, False),
    (404, DeliveryStatus.PENDING, False),
    (301, DeliveryStatus.PENDING, False),  # redirects are not followed
    (None, DeliveryStatus.PENDING, False),  # no answer: refused, down, timed out
])
def test_what_an_answer_leads_to(code: int | None, status: DeliveryStatus,
                                 disable: bool) -> None:
    decision = decide(POLICY, attempt=1, status_code=code, retry_after=None, now=NOW,
                      spread=0.5)
    assert decision.status == status
    assert decision.disable_endpoint == disable
    if status == DeliveryStatus.PENDING:
        assert decision.next_attempt_at == NOW + timedelta(seconds=30)
    else:
        assert decision.next_attempt_at is None


def test_the_last_attempt_gives_up() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert decide(policy, attempt=2, status_code=503, retry_after=None, now=NOW,
                  spread=0.5).status == DeliveryStatus.PENDING
    last = decide(policy, attempt=3, status_code=503, retry_after=None, now=NOW, spread=0.5)
    assert last.status == DeliveryStatus.FAILED and last.next_attempt_at is None


def test_retry_after_is_honoured_when_longer_and_capped_at_the_longest_backoff() -> None:
    later = decide(POLICY, attempt=1, status_code=503, retry_after=600.0, now=NOW, spread=0.5)
    assert later.next_attempt_at == NOW + timedelta(seconds=600)
    sooner = decide(POLICY, attempt=5, status_code=503, retry_after=1.0, now=NOW, spread=0.5)
    assert sooner.next_attempt_at == NOW + timedelta(seconds=2430)
    forever = decide(POLICY, attempt=1, status_code=429, retry_after=10**9, now=NOW,
                     spread=0.5)
    assert forever.next_attempt_at == NOW + timedelta(seconds=POLICY.max_delay_seconds)


@pytest.mark.parametrize(("header", "seconds"), [
    ("120", 120.0),
    (" 7 ", 7.0),
    ("Tue, 01 Jan 2030 12:05:00 GMT", 300.0),
    ("Tue, 01 Jan 2030 11:00:00 GMT", 0.0),  # in the past: now
    ("soon", None),
    ("-5", None),
    (None, None),
])
def test_retry_after_header_forms(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, NOW) == seconds
