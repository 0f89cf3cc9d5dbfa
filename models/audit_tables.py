"""The rollups the two audits read (migration 0028_audit_rollup). Written only by the
`ledger_audits_add` trigger, in the statement that inserts ledger rows; the ledger is
append-only, so every count and sum is exact for the ledger rows of its group."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import BigInteger, Date, DateTime, ForeignKey, Index, Integer, Numeric, String, text
from sqlalchemy.orm import Mapped, mapped_column

from models.tables import Base


class LedgerOutputDaily(Base):
    """Engine-run jobs per UTC day, tenant, model, feature, output-token bucket and
    requested-max_tokens bucket (`ledger.output_histogram`'s scheme)."""

    __tablename__ = "ledger_output_daily"
    __table_args__ = (Index("ix_ledger_output_daily_tenant_day", "tenant_id", "day"),)

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    feature: Mapped[str] = mapped_column(String(200), primary_key=True)
    output_bucket: Mapped[int] = mapped_column(Integer, primary_key=True)
    requested_bucket: Mapped[int] = mapped_column(Integer, primary_key=True)
    jobs: Mapped[int] = mapped_column(BigInteger, nullable=False)
    length_jobs: Mapped[int] = mapped_column(BigInteger, nullable=False)
    capped_jobs: Mapped[int] = mapped_column(BigInteger, nullable=False)
    output_tokens: Mapped[int] = mapped_column(BigInteger, nullable=False)
    requested_max_tokens: Mapped[int] = mapped_column(BigInteger, nullable=False)  # a sum
    max_output: Mapped[int] = mapped_column(Integer, nullable=False)
    min_requested: Mapped[int] = mapped_column(Integer, nullable=False)
    max_requested: Mapped[int] = mapped_column(Integer, nullable=False)
    cost_usd: Mapped[Decimal] = mapped_column(Numeric(24, 10), nullable=False)


class RequestSends(Base):
    """How many times a tenant's request (its single-flight key) was billed, cascade
    attempts left out; `first_job_id` is one of those sends, `request_repeats` the rest."""

    __tablename__ = "request_sends"
    __table_args__ = (Index("ix_request_sends_repeated", "last_at",
                            postgresql_where=text("sends >= 2")),)

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    sends: Mapped[int] = mapped_column(BigInteger, nullable=False)
    first_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    last_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    first_job_id: Mapped[uuid.UUID] = mapped_column(nullable=False)


class RequestRepeat(Base):
    """A send of a request other than the one `request_sends.first_job_id` names."""

    __tablename__ = "request_repeats"
    __table_args__ = (Index("ix_request_repeats_key", "tenant_id", "key"),)

    job_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(nullable=False)
    key: Mapped[str] = mapped_column(String(64), nullable=False)


class ClientRetriesDaily(Base):
    """Billed jobs whose request carried an SDK retry count, per UTC day, tenant, feature."""

    __tablename__ = "client_retries_daily"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    feature: Mapped[str] = mapped_column(String(200), primary_key=True)
    retried_jobs: Mapped[int] = mapped_column(BigInteger, nullable=False)
    max_client_retry_count: Mapped[int] = mapped_column(Integer, nullable=False)
    cost_usd: Mapped[Decimal] = mapped_column(Numeric(24, 10), nullable=False)
    naive_cost_usd: Mapped[Decimal] = mapped_column(Numeric(24, 10), nullable=False)
