"""Versioned price cards and calibrations: storing them and reading the current ones."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from ledger.cost_model import Calibration, PriceCard, seconds_decimal
from models.tables import StoredCalibration, StoredPriceCard
from penny.settings import ModelPrice


def _card(row: StoredPriceCard) -> PriceCard:
    return PriceCard(model=row.model, engine_hour_usd=row.engine_hour_usd,
                     list_input_usd_per_mtok=row.list_input_usd_per_mtok,
                     list_cached_input_usd_per_mtok=row.list_cached_input_usd_per_mtok,
                     list_output_usd_per_mtok=row.list_output_usd_per_mtok, id=row.id)


def _same_prices(card: PriceCard, price: ModelPrice) -> bool:
    return (card.engine_hour_usd == price.engine_hour_usd
            and card.list_input_usd_per_mtok == price.list_input_usd_per_mtok
            and card.list_cached_input_usd_per_mtok == price.list_cached_input_usd_per_mtok
            and card.list_output_usd_per_mtok == price.list_output_usd_per_mtok)


def latest_price_card(session: Session, model: str) -> PriceCard | None:
    row = session.execute(
        select(StoredPriceCard).where(StoredPriceCard.model == model)
        .order_by(StoredPriceCard.version.desc()).limit(1)
    ).scalar_one_or_none()
    return _card(row) if row is not None else None


def price_card_for(session: Session, model: str, price: ModelPrice) -> PriceCard:
    """The stored card with the configured prices: the latest version if it still says
    the same, else a new version. Two processes storing the same new version at once
    both end up with the one that won. Commits when it stores one."""
    for _ in range(3):
        latest = latest_price_card(session, model)
        if latest is not None and _same_prices(latest, price):
            return latest
        version = _next_version(session, StoredPriceCard, model)
        stored = session.execute(
            pg_insert(StoredPriceCard).values(
                model=model, version=version, engine_hour_usd=price.engine_hour_usd,
                list_input_usd_per_mtok=price.list_input_usd_per_mtok,
                list_cached_input_usd_per_mtok=price.list_cached_input_usd_per_mtok,
                list_output_usd_per_mtok=price.list_output_usd_per_mtok,
            ).on_conflict_do_nothing().returning(StoredPriceCard.id)
        ).scalar_one_or_none()
        session.commit()
        if stored is not None:
            card = latest_price_card(session, model)
            assert card is not None
            return card
    raise RuntimeError(f"could not store a price card for {model}")


def _next_version(session: Session, table: type[StoredPriceCard] | type[StoredCalibration],
                  model: str) -> int:
    return int(session.execute(
        select(func.coalesce(func.max(table.version), 0)).where(table.model == model)
    ).scalar_one()) + 1


def _calibration(row: StoredCalibration) -> Calibration:
    return Calibration(
        model=row.model,
        request_overhead_s=seconds_decimal(row.request_overhead_s),
        prefill_s_per_token=seconds_decimal(row.prefill_s_per_token),
        decode_s_per_token_bs1=seconds_decimal(row.decode_s_per_token_bs1),
        decode_s_per_token_full=seconds_decimal(row.decode_s_per_token_full),
        full_batch_jobs=row.full_batch_jobs,
        decode_s_per_context_token=seconds_decimal(row.decode_s_per_context_token or 0.0),
        id=row.id)


def latest_calibration(session: Session, model: str) -> Calibration | None:
    row = session.execute(
        select(StoredCalibration).where(StoredCalibration.model == model)
        .order_by(StoredCalibration.version.desc()).limit(1)
    ).scalar_one_or_none()
    return _calibration(row) if row is not None else None


@dataclass(frozen=True)
class MeasuredSpeed:
    """What a calibration probe found (see `workers.calibration_probe`)."""

    request_overhead_s: float
    prefill_s_per_token: float
    decode_s_per_token_bs1: float
    decode_s_per_token_full: float
    full_batch_jobs: int
    machine: dict[str, Any]
    engine_settings: dict[str, Any]
    samples: list[dict[str, Any]]
    decode_s_per_context_token: float = 0.0


def store_calibration(session: Session, model: str, speed: MeasuredSpeed) -> Calibration:
    """Store `speed` as the model's next calibration version. Commits."""
    version = _next_version(session, StoredCalibration, model)
    row = StoredCalibration(
        model=model, version=version, request_overhead_s=speed.request_overhead_s,
        prefill_s_per_token=speed.prefill_s_per_token,
        decode_s_per_token_bs1=speed.decode_s_per_token_bs1,
        decode_s_per_token_full=speed.decode_s_per_token_full,
        full_batch_jobs=speed.full_batch_jobs,
        decode_s_per_context_token=speed.decode_s_per_context_token, machine=speed.machine,
        engine_settings=speed.engine_settings, samples=speed.samples)
    session.add(row)
    session.commit()
    return _calibration(row)


@dataclass(frozen=True)
class CalibrationListing:
    id: int
    model: str
    version: int
    created_at: datetime
    request_overhead_s: float
    prefill_s_per_token: float
    decode_s_per_token_bs1: float
    decode_s_per_token_full: float
    full_batch_jobs: int
    machine: dict[str, Any]
    decode_s_per_context_token: float | None = None  # None: measured before the probe did


def list_calibrations(session: Session, model: str | None = None) -> list[CalibrationListing]:
    """Every stored calibration, newest first (of one model if given)."""
    query = select(StoredCalibration).order_by(StoredCalibration.created_at.desc(),
                                               StoredCalibration.id.desc())
    if model is not None:
        query = query.where(StoredCalibration.model == model)
    return [
        CalibrationListing(row.id, row.model, row.version, row.created_at,
                           row.request_overhead_s, row.prefill_s_per_token,
                           row.decode_s_per_token_bs1, row.decode_s_per_token_full,
                           row.full_batch_jobs, row.machine,
                           row.decode_s_per_context_token)
        for row in session.execute(query).scalars()
    ]

