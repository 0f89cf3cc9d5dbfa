"""Retry-storm detection. Pure: the repeats come from `models.audit_queries`.

Three signals, per tenant and feature:
- the same request (its single-flight key: same tenant, model and request document) sent
  at least N times within a window — each repeat after the first is money the client's
  retry loop cost (or would have cost without penny's caches and single-flight);
- the same Idempotency-Key sent again and answered with the stored submission — those
  repeats cost nothing, but the naive way would have run the submission again each time;
- jobs whose request carried a client SDK retry count (`x-stainless-retry-count` > 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any


def _plain(value: Decimal) -> str:
    return f"{value:f}"


def most_in_window(times: Sequence[datetime], window: timedelta) -> tuple[int, int]:
    """The most `times` that fit in one window of length `window` (both ends included),
    and the index (in sorted order) where the first such window starts."""
    ordered = sorted(times)
    best, best_start, start = 0, 0, 0
    for end, moment in enumerate(ordered):
        while moment - ordered[start] > window:
            start += 1
        if end - start + 1 > best:
            best, best_start = end - start + 1, start
    return best, best_start


@dataclass(frozen=True)
class Send:
    """One billed job of a repeated request."""

    at: datetime
    cost_usd: Decimal
    naive_cost_usd: Decimal
    served_by: str
    client_retry_count: int | None


@dataclass(frozen=True)
class RequestStorm:
    tenant: str
    feature: str
    model: str
    key: str  # the request's single-flight key (a hash)
    sends: int  # in the busiest window
    first_at: datetime
    last_at: datetime
    repeats_cost_usd: Decimal  # what the repeats in that window cost
    repeats_naive_cost_usd: Decimal  # what they would have cost the naive way
    max_client_retry_count: int | None

    def as_dict(self) -> dict[str, Any]:
        return {"kind": "request", "tenant": self.tenant, "feature": self.feature,
                "model": self.model, "key": self.key, "sends": self.sends,
                "repeats": self.sends - 1, "first_at": self.first_at.isoformat(),
                "last_at": self.last_at.isoformat(),
                "repeats_cost_usd": _plain(self.repeats_cost_usd),
                "repeats_naive_cost_usd": _plain(self.repeats_naive_cost_usd),
                "max_client_retry_count": self.max_client_retry_count}


def request_storm(tenant: str, feature: str, model: str, key: str, sends: Sequence[Send],
                  min_sends: int, window: timedelta) -> RequestStorm | None:
    """The storm in `sends` if at least `min_sends` of them fall in one window."""
    ordered = sorted(sends, key=lambda s: s.at)
    count, start = most_in_window([s.at for s in ordered], window)
    if count < min_sends:
        return None
    burst = ordered[start:start + count]
    repeats = burst[1:]
    retries = [s.client_retry_count for s in burst if s.client_retry_count is not None]
    return RequestStorm(
        tenant=tenant, feature=feature, model=model, key=key, sends=count,
        first_at=burst[0].at, last_at=burst[-1].at,
        repeats_cost_usd=sum((s.cost_usd for s in repeats), Decimal(0)),
        repeats_naive_cost_usd=sum((s.naive_cost_usd for s in repeats), Decimal(0)),
        max_client_retry_count=max(retries) if retries else None)


@dataclass(frozen=True)
class KeyStorm:
    """An Idempotency-Key sent `1 + replays` times, answered from the stored submission."""

    tenant: str
    submission_id: str
    replays: int
    first_at: datetime
    last_at: datetime
    submission_naive_cost_usd: Decimal

    @property
    def repeats_naive_cost_usd(self) -> Decimal:
        return self.submission_naive_cost_usd * self.replays

    def as_dict(self) -> dict[str, Any]:
        return {"kind": "idempotency_key", "tenant": self.tenant,
                "submission_id": self.submission_id, "sends": self.replays + 1,
                "repeats": self.replays, "first_at": self.first_at.isoformat(),
                "last_at": self.last_at.isoformat(), "repeats_cost_usd": "0",
                "repeats_naive_cost_usd": _plain(self.repeats_naive_cost_usd)}


def is_key_storm(replays: int, first_at: datetime, last_at: datetime, min_sends: int,
                 window: timedelta) -> bool:
    """All the sends are known to lie between the first and the last: a storm when there
    are enough of them and that span fits the window."""
    return replays + 1 >= min_sends and last_at - first_at <= window


@dataclass(frozen=True)
class ClientRetries:
    """Jobs of a tenant and feature whose request said the SDK was retrying."""

    tenant: str
    feature: str
    retried_jobs: int
    max_client_retry_count: int
    cost_usd: Decimal
    naive_cost_usd: Decimal

    def as_dict(self) -> dict[str, Any]:
        return {"tenant": self.tenant, "feature": self.feature,
                "retried_jobs": self.retried_jobs,
                "max_client_retry_count": self.max_client_retry_count,
                "cost_usd": _plain(self.cost_usd),
                "naive_cost_usd": _plain(self.naive_cost_usd)}
