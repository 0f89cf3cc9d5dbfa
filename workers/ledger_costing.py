"""Costing at record time: every ledger row of a batch gets the price card and calibration
versions current for its model, its naive counterfactual and the saving split by mechanism
(`ledger.attribution`), before the batch's one recording transaction.

The current versions are read from the database at most once a minute per model, so a
new `penny calibrate` or a price change reaches running workers without a restart and a
batch pays no query for them most of the time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from ledger.attribution import (
    EngineJob,
    attribute_engine_job,
    attribute_escalated_attempt,
    unmodelled,
)
from ledger.cost_model import Calibration, CostBasis, PriceCard
from ledger.pricing import SERVED_BY_ENGINE
from models.costing import latest_calibration, price_card_for
from models.queue import ClaimedBatch, JobOutcome
from penny.settings import Settings

log = logging.getLogger(__name__)

REFRESH_SECONDS = 60.0


@dataclass(frozen=True)
class _Current:
    card: PriceCard
    calibration: Calibration | None
    read_at: float


def requested_max_tokens(request: dict[str, Any]) -> tuple[int, int]:
    """(asked for, ran with) from a stored request. A cap policy that lowers max_tokens
    keeps what the client asked for as `requested_max_tokens`."""
    sampling = request.get("sampling") or {}
    applied = int(sampling.get("max_tokens", 0))
    return int(sampling.get("requested_max_tokens", applied)), applied


class LedgerCosting:
    def __init__(self, settings: Settings, sessions: sessionmaker[Session],
                 refresh_seconds: float = REFRESH_SECONDS) -> None:
        self.settings, self.sessions = settings, sessions
        self.refresh_seconds = refresh_seconds
        self._current: dict[str, _Current] = {}
        self._lock = threading.Lock()

    def current(self, model: str) -> _Current:
        with self._lock:
            known = self._current.get(model)
            if known is not None and time.monotonic() - known.read_at < self.refresh_seconds:
                return known
            with self.sessions() as session:
                card = price_card_for(session, model, self.settings.price_for(model))
                calibration = latest_calibration(session, model)
            known = _Current(card, calibration, time.monotonic())
            self._current[model] = known
            return known

    def _baseline(self, served: CostBasis) -> CostBasis:
        name = self.settings.baseline_model
        if name is None or name == served.model:
            return served
        baseline = self.current(name)
        if baseline.calibration is None:
            return served  # not measured: claim no routing saving rather than guess one
        return CostBasis(baseline.card, baseline.calibration)

    def cost(self, batch: ClaimedBatch, outcomes: Sequence[JobOutcome]) -> list[JobOutcome]:
        """The outcomes with their ledger rows costed. Never raises: a row it cannot cost
        keeps the unmodelled counterfactual it came with (no saving claimed)."""
        try:
            return self._cost(batch, outcomes)
        except Exception:
            log.exception("could not cost the ledger rows of batch %s; no saving is claimed",
                          batch.id)
            return list(outcomes)

    def _cost(self, batch: ClaimedBatch, outcomes: Sequence[JobOutcome]) -> list[JobOutcome]:
        current = self.current(batch.model)
        served = (CostBasis(current.card, current.calibration)
                  if current.calibration is not None else None)
        baseline = self._baseline(served) if served is not None else None
        ran = len(batch.jobs)
        costed = []
        for outcome in outcomes:
            if outcome.ledger is None or outcome.ledger.get(
                    "served_by", SERVED_BY_ENGINE) != SERVED_BY_ENGINE:
                # No engine ran for it (a semantic-cache hit in the batch): its row already
                # carries the counterfactual of the answer it reused.
                costed.append(outcome)
                continue
            ledger = dict(outcome.ledger)
            cost = Decimal(ledger["cost_usd"])
            # The part of the cost that paid for engine calls that raised (priced_outcomes).
            failover = -Decimal(ledger.get("saving_failover_usd", 0))
            ledger["price_card_id"] = current.card.id
            if outcome.escalation is not None:
                # Needs no calibration: whatever the attempt cost, the naive way never
                # ran it.
                ledger.update(attribute_escalated_attempt(cost, failover).columns())
                ledger["calibration_id"] = served.calibration.id if served else None
                ledger["baseline_model"] = (baseline.model if baseline is not None
                                            else self.settings.baseline_model)
            elif served is None or baseline is None or outcome.error is not None:
                # A failure that ran has no naive twin to compare with: no saving claimed.
                ledger.update(unmodelled(cost, failover).columns())
                ledger["calibration_id"] = None
                ledger["baseline_model"] = None
            else:
                asked, applied = requested_max_tokens(outcome.job.request)
                job = EngineJob(
                    prompt_tokens=int(ledger["input_tokens"]),
                    cached_tokens=int(ledger["cached_tokens"]),
                    output_tokens=int(ledger["output_tokens"]),
                    requested_max_tokens=asked, applied_max_tokens=applied,
                    finish_reason=(outcome.result or {}).get("finish_reason"),
                    batch_jobs=ran,
                    original_prompt_tokens=(outcome.result or {}).get(
                        "original_prompt_tokens"))
                ledger.update(attribute_engine_job(job, cost, served, baseline,
                                                   failover).columns())
                ledger["calibration_id"] = served.calibration.id
                ledger["baseline_model"] = baseline.model
            costed.append(replace(outcome, ledger=ledger))
        return costed
