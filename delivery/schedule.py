"""What happens after a delivery attempt, pure: delivered, retried later (exponential
backoff with jitter, `Retry-After` honoured), given up, or the endpoint disabled (410).

With the defaults (10 attempts, 30 s x 3^n capped at 6 h, +-25% jitter) the retries of one
event spread over about 21 hours: 30 s, 1.5 min, 4.5 min, 13.5 min, 40 min, 2 h, then 6 h.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from enum import StrEnum


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # due at next_attempt_at (or being attempted)
    DELIVERED = "delivered"  # the receiver answered 2xx
    FAILED = "failed"  # out of attempts; a retry through the API starts a new round
    DISABLED = "disabled"  # its endpoint answered 410 Gone (now or to another delivery)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 10
    base_seconds: float = 30.0
    factor: float = 3.0
    max_delay_seconds: float = 6 * 3600.0
    # Each delay is the nominal one +- this fraction, so receivers that failed together
    # are not all retried in the same second.
    jitter: float = 0.25

    def backoff_seconds(self, attempt: int, spread: float) -> float:
        """The wait after the `attempt`-th failed attempt (1-based); `spread` in [0, 1)
        picks the point inside the jitter band."""
        nominal = min(self.max_delay_seconds, self.base_seconds * self.factor ** (attempt - 1))
        return nominal * (1 + self.jitter * (2 * spread - 1))


@dataclass(frozen=True)
class AttemptResult:
    """What one attempt got."""

    status_code: int | None  # None: no HTTP answer (refused, unreachable, timed out)
    error: str | None
    duration_ms: float
    webhook_timestamp: int | None = None  # None: refused before anything was signed
    address: str | None = None  # the checked address connected to
    retry_after: str | None = None  # the receiver's Retry-After header, as sent
    response_excerpt: str | None = None


@dataclass(frozen=True)
class Decision:
    status: DeliveryStatus
    next_attempt_at: datetime | None
    disable_endpoint: bool = False


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or an HTTP date)."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # HTTP dates are GMT
        return None
    return max(0.0, (when - now).total_seconds())


def decide(
    policy: RetryPolicy,
    *,
    attempt: int,
    status_code: int | None,
    retry_after: float | None,
    now: datetime,
    spread: float,
) -> Decision:
    """After attempt number `attempt` of this round got `status_code` (None: no answer:
    refused, unreachable, timed out). Redirects are not followed: a 3xx is a failure."""
    if status_code is not None and 200 <= status_code < 300:
        return Decision(DeliveryStatus.DELIVERED, None)
    if status_code == 410:
        return Decision(DeliveryStatus.DISABLED, None, disable_endpoint=True)
    if attempt >= policy.max_attempts:
        return Decision(DeliveryStatus.FAILED, None)
    delay = policy.backoff_seconds(attempt, spread)
    if retry_after is not None:
        # Honoured, but never beyond the longest backoff: a receiver cannot park its own
        # deliveries for a year.
        delay = max(delay, min(retry_after, policy.max_delay_seconds))
    return Decision(DeliveryStatus.PENDING, now + timedelta(seconds=delay))
