"""SQLAlchemy 2 tables. The jobs table is the queue: a job row is committed before intake
answers, and every later state lives on that row."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    false,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

JsonDoc = JSON().with_variant(JSONB(), "postgresql")
Money = Numeric(20, 10)


class Base(DeclarativeBase):
    pass


def _now() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200), unique=True, nullable=False)
    created_at: Mapped[datetime] = _now()
    # Where this tenant's submissions without a callback_url of their own announce their end.
    webhook_url: Mapped[str | None] = mapped_column(String(2000))


class ApiKey(Base):
    """A tenant's API key, stored only as its SHA-256; `prefix` is the start of the key,
    shown so people can tell their keys apart."""

    __tablename__ = "api_keys"
    __table_args__ = (Index("ix_api_keys_tenant", "tenant_id", "created_at"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"), nullable=False)
    name: Mapped[str | None] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(16), nullable=False)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    created_at: Mapped[datetime] = _now()
    # Touched when a process first resolves the key after its cache entry ran out, so it
    # is accurate to PENNY_KEY_CACHE_SECONDS.
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Submission(Base):
    """One unit of intake: a single job, a bulk request or a file. Outputs are per submission."""

    __tablename__ = "submissions"
    __table_args__ = (
        UniqueConstraint("tenant_id", "idempotency_key"),
        # What a job's (submission, tenant) key refers to (see Job).
        UniqueConstraint("id", "tenant_id", name="uq_submissions_id_tenant"),
        Index("ix_submissions_open_expiry", "expires_at",
              postgresql_where=text("status = 'open' AND expires_at IS NOT NULL")),
        Index("ix_submissions_tenant_kind_created", "tenant_id", "kind", "created_at"),
        # The coalescer looks for batches to validate every tick: walk only those rows,
        # fresh ones first.
        Index("ix_submissions_validating", "validation_attempts", "created_at",
              postgresql_where=text("status = 'validating'")),
        Index("ix_submissions_idempotency_created", "created_at",
              postgresql_where=text("idempotency_key IS NOT NULL")),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"), nullable=False)
    kind: Mapped[str] = mapped_column(String(20), nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False, server_default="open")
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    total_jobs: Mapped[int] = mapped_column(Integer, nullable=False)
    source_name: Mapped[str | None] = mapped_column(String(500))
    outputs: Mapped[dict[str, Any] | None] = mapped_column(JsonDoc)
    created_at: Mapped[datetime] = _now()
    finalizing_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    # Batch-API submissions (kind "openai_batch" / "anthropic_batch"); null for the others.
    endpoint: Mapped[str | None] = mapped_column(String(40))
    completion_window: Mapped[str | None] = mapped_column(String(10))
    # When the completion window runs out: the sweeper expires whatever has not started.
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    batch_metadata: Mapped[dict[str, Any] | None] = mapped_column(JsonDoc)
    callback_url: Mapped[str | None] = mapped_column(String(2000))
    input_file_id: Mapped[str | None] = mapped_column(String(64))
    output_file_id: Mapped[str | None] = mapped_column(String(64))
    error_file_id: Mapped[str | None] = mapped_column(String(64))
    output_expires_after_seconds: Mapped[int | None] = mapped_column(Integer)
    # Validation errors of a batch that failed before anything ran: [{line, code, ...}].
    errors: Mapped[list[dict[str, Any]] | None] = mapped_column(JsonDoc)
    retry_of: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("submissions.id", name="fk_submissions_retry_of"))
    cancelling_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    expired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    failed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Validation runs that raised (not bad lines: those fail the batch at once), and when
    # the next may start; past PENNY_MAX_VALIDATION_ATTEMPTS the batch fails.
    validation_attempts: Mapped[int] = mapped_column(Integer, nullable=False,
                                                     server_default="0")
    validate_after: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # A CSV upload's header, in order: its results come back as CSV with these columns.
    input_columns: Mapped[list[str] | None] = mapped_column(JsonDoc)
    # When a batch's jobs were queued; null while it validates, and for one that failed.
    in_progress_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Deleted batches vanish from the batch APIs; their jobs and ledger rows stay (billing).
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # What intake warned about when it accepted this (a soft budget passed): [{code, ...}].
    warnings: Mapped[list[dict[str, Any]] | None] = mapped_column(JsonDoc)
    # W3C traceparent of the intake request's span (observability.tracing); null unless
    # tracing is on.
    traceparent: Mapped[str | None] = mapped_column(String(55))
    # How often the same Idempotency-Key came back and was answered with this submission
    # (retry-storm detection), and when it last did.
    idempotent_replays: Mapped[int] = mapped_column(Integer, nullable=False,
                                                    server_default="0")
    last_replayed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class StoredFile(Base):
    """A file of the OpenAI-compatible Files API; its bytes live in the object store."""

    __tablename__ = "files"
    __table_args__ = (
        Index("ix_files_tenant_created", "tenant_id", "created_at"),
        UniqueConstraint("tenant_id", "idempotency_key", name="uq_files_tenant_idempotency_key"),
        Index("ix_files_idempotency_created", "created_at",
              postgresql_where=text("idempotency_key IS NOT NULL")),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"), nullable=False)
    purpose: Mapped[str] = mapped_column(String(40), nullable=False)
    filename: Mapped[str] = mapped_column(String(500), nullable=False)
    bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    object_key: Mapped[str] = mapped_column(String(500), nullable=False)
    # The batch whose output (or error) file this is; null for uploads.
    submission_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("submissions.id"))
    created_at: Mapped[datetime] = _now()
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # An upload's Idempotency-Key and the hash of what was uploaded with it.
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str | None] = mapped_column(String(64))


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        # One check per new job, not one for the submission and one for the tenant, and a
        # job's tenant is its submission's (the submission's tenant exists by its own key).
        ForeignKeyConstraint(["submission_id", "tenant_id"],
                             ["submissions.id", "submissions.tenant_id"],
                             name="fk_jobs_submission_tenant"),
        Index("ix_jobs_submission", "submission_id", "line_no"),
        # A batch's jobs; a job in no batch yet (every new one) takes no entry.
        Index("ix_jobs_batch", "batch_id", postgresql_where=text("batch_id IS NOT NULL")),
        # Single-flight looks up leaders of identical requests that are still in flight.
        Index(
            "ix_jobs_in_flight_key",
            "single_flight_key",
            postgresql_where=text(
                "status IN ('batched', 'running') AND leader_job_id IS NULL"
            ),
        ),
        Index("ix_jobs_leader", "leader_job_id",
              postgresql_where=text("leader_job_id IS NOT NULL")),
        # ... and every queued copy of a request it has just batched: looked up by
        # equality only, so a hash index (every queued job enters it; as a B-tree, its
        # random digests cost a walk of comparisons each and outgrew memory on big files).
        Index(
            "ix_jobs_queued_key",
            "single_flight_key",
            postgresql_using="hash",
            postgresql_where=text("status = 'queued' AND single_flight_key IS NOT NULL"),
        ),
        # Per-tenant limits: queued jobs, and the budget's reservation for unfinished ones;
        # and the coalescer's walk over every tenant's queued jobs (it sorts what it finds
        # most urgent first, an order no index holds).
        Index("ix_jobs_tenant_unfinished", "tenant_id", "status",
              postgresql_where=text("status IN ('queued', 'batched', 'running')")),
        Index("ix_jobs_cascade_of", "cascade_of", postgresql_where=text("cascade_of IS NOT NULL")),
        Index("ix_jobs_failed_finished", "tenant_id", "finished_at",
              postgresql_where=text("status = 'failed'")),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    submission_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    tenant_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    line_no: Mapped[int] = mapped_column(Integer, nullable=False)
    custom_id: Mapped[str | None] = mapped_column(String(500))
    model: Mapped[str] = mapped_column(String(200), nullable=False)
    request: Mapped[dict[str, Any]] = mapped_column(JsonDoc, nullable=False)
    tags: Mapped[dict[str, Any]] = mapped_column(JsonDoc, nullable=False, default=dict)
    status: Mapped[str] = mapped_column(String(20), nullable=False, server_default="queued")
    priority: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    estimated_tokens: Mapped[int] = mapped_column(Integer, nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    batch_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("batches.id"))
    # Where the planner put the job in its batch: prefix groups sit next to each other.
    batch_position: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[dict[str, Any] | None] = mapped_column(JsonDoc)
    # The job should be done by then; near it, the coalescer sends the job first.
    deadline_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Same key = same answer (see coalescer.single_flight); None for sampled requests.
    single_flight_key: Mapped[str | None] = mapped_column(String(64))
    # Set on a copy answered from another job's generation instead of running itself.
    leader_job_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("jobs.id"))
    # The job's use of the exact result cache: "on", "off" or "refresh" (cache.keys).
    cache_mode: Mapped[str] = mapped_column(String(10), nullable=False, server_default="on")
    # The CSV row the job came from, cell by cell (a CSV upload's jobs only).
    input_row: Mapped[list[str] | None] = mapped_column(JsonDoc)
    # How `model: "auto"` or `"cascade"` chose the tier: {"mode", "tier", "reason", ...}
    # (routing.router); None for a job that named its model.
    route: Mapped[dict[str, Any] | None] = mapped_column(JsonDoc)
    # Set on a cascade attempt that escalated: this row holds the lower tier's answer and
    # bill, and `cascade_of` is the job that went on to the next tier.
    cascade_of: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("jobs.id", name="fk_jobs_cascade_of"))
    # The client SDK's own retry count (`x-stainless-retry-count`, sent by the openai and
    # anthropic SDKs) on the request that made this job; None when it sent none.
    client_retry_count: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Batch(Base):
    __tablename__ = "batches"
    __table_args__ = (Index("ix_batches_status_lease", "status", "lease_expires_at"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    model: Mapped[str] = mapped_column(String(200), nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False, server_default="pending")
    job_count: Mapped[int] = mapped_column(Integer, nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    # A fresh token per claim fences off a worker whose lease ran out: its late write
    # finds a different token and is discarded.
    claim_token: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    worker_id: Mapped[str | None] = mapped_column(String(200))
    # Affinity: the worker whose prefix cache most likely holds this batch's prefix.
    prefix_key: Mapped[str | None] = mapped_column(String(64))
    shared_prefix_tokens: Mapped[int] = mapped_column(Integer, nullable=False,
                                                      server_default="0")
    target_worker: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    dispatched_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    engine_seconds: Mapped[float | None] = mapped_column(Float)
    # Seconds of engine calls that raised on these jobs (this batch's own, or its share of
    # the batch it was split from), billed with them when they are recorded.
    failover_seconds: Mapped[float] = mapped_column(Float, nullable=False, server_default="0")
    created_at: Mapped[datetime] = _now()
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # W3C traceparent of the coalescer's span for this batch: the worker's span is its
    # child. Null unless tracing is on.
    traceparent: Mapped[str | None] = mapped_column(String(55))
    # Planned by the coalescer: until a worker first takes it, newly queued jobs of its
    # model may join it (a failover half never does: it is looking for a culprit).
    takes_arrivals: Mapped[bool] = mapped_column(Boolean, nullable=False,
                                                 server_default=false())


class Result(Base):
    __tablename__ = "results"

    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id"), primary_key=True)
    # None: answered from the result cache at intake, never batched.
    batch_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("batches.id"))
    text: Mapped[str] = mapped_column(Text, nullable=False)
    finish_reason: Mapped[str] = mapped_column(String(40), nullable=False)
    prompt_tokens: Mapped[int] = mapped_column(Integer, nullable=False)
    cached_tokens: Mapped[int] = mapped_column(Integer, nullable=False)
    output_tokens: Mapped[int] = mapped_column(Integer, nullable=False)
    mean_logprob: Mapped[float | None] = mapped_column(Float)
    # An embeddings job: one vector per input, back to back, as little-endian float32 (the
    # bytes the OpenAI API's base64 encoding carries). Null for generations.
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary)
    embedding_dimensions: Mapped[int | None] = mapped_column(Integer)
    # The prompt's tokens before opt-in compression cut its context (`prompt_tokens` is what
    # the engine read); null when the job did not ask for compression.
    original_prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    # OpenAI's `logprobs.content` list for the answer, when the job asked for logprobs.
    token_logprobs: Mapped[list[dict[str, Any]] | None] = mapped_column(JsonDoc)
    # An n > 1 request's further samples (index 1..n-1), each {text, finish_reason,
    # output_tokens, token_logprobs}; `text` above is sample 0. Usage counts them all.
    choices: Mapped[list[dict[str, Any]] | None] = mapped_column(JsonDoc)
    created_at: Mapped[datetime] = _now()


# Result columns only some jobs fill: every row inserted in one statement names them all.
RESULT_OPTIONAL_FIELDS = ("original_prompt_tokens", "token_logprobs", "choices")


def result_row(result: dict[str, Any], **row: Any) -> dict[str, Any]:
    """A `results` row from a worker's result dict (which may leave the optional fields out)."""
    return {**dict.fromkeys(RESULT_OPTIONAL_FIELDS), **result, **row}


class LedgerEntry(Base):
    __tablename__ = "ledger_entries"
    # A tenant's budget sums its ledger since the start of the month.
    __table_args__ = (Index("ix_ledger_entries_tenant_created", "tenant_id", "created_at"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    # Unique: a job is billed once, however many times its batch was attempted.
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id"), unique=True, nullable=False)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"), nullable=False)
    submission_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("submissions.id"), nullable=False, index=True
    )
    # None: answered from the result cache at intake, never batched.
    batch_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("batches.id"))
    model: Mapped[str] = mapped_column(String(200), nullable=False)
    input_tokens: Mapped[int] = mapped_column(Integer, nullable=False)
    cached_tokens: Mapped[int] = mapped_column(Integer, nullable=False)
    output_tokens: Mapped[int] = mapped_column(Integer, nullable=False)
    engine_seconds: Mapped[float] = mapped_column(Float, nullable=False)
    cost_usd: Mapped[Decimal] = mapped_column(Money, nullable=False)
    list_cost_usd: Mapped[Decimal] = mapped_column(Money, nullable=False)
    # "engine": generated for this job. "single_flight": copied from `source_job_id`'s
    # generation; it costs 0 and `single_flight_saved_usd` is what a second run would
    # have cost. "exact_cache": answered at intake from the result cache entry that
    # `source_job_id` produced; it costs 0 and `cache_saved_usd` is what producing it cost.
    served_by: Mapped[str] = mapped_column(String(20), nullable=False, server_default="engine")
    source_job_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    single_flight_saved_usd: Mapped[Decimal] = mapped_column(Money, nullable=False,
                                                             server_default="0")
    cache_saved_usd: Mapped[Decimal] = mapped_column(Money, nullable=False, server_default="0")
    # How the job's tier was chosen ("auto: easy: lookup question", "cascade: kept", ...);
    # None for a job that named its model.
    route: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = _now()
    # The counterfactual (ledger.attribution): what the job would have cost the naive way
    # on `baseline_model`, priced with the card and calibration versions named here (null
    # when its model had none), and the saving split by mechanism. The database checks that
    # naive_cost_usd - cost_usd equals the savings plus unexplained_usd, and refuses any
    # UPDATE or DELETE of a row (append-only).
    price_card_id: Mapped[int | None] = mapped_column(ForeignKey("price_cards.id"))
    calibration_id: Mapped[int | None] = mapped_column(ForeignKey("calibrations.id"))
    baseline_model: Mapped[str | None] = mapped_column(String(200))
    # "succeeded", or "failed" for a job that failed after the engine worked on it.
    outcome: Mapped[str] = mapped_column(String(20), nullable=False,
                                         server_default="succeeded")
    naive_cost_usd: Mapped[Decimal] = mapped_column(Money, nullable=False, server_default="0")
    saving_exact_cache_usd: Mapped[Decimal] = mapped_column(Money, nullable=False,
                                                            server_default="0")
    saving_semantic_cache_usd: Mapped[Decimal] = mapped_column(Money, nullable=False,
                                                               server_default="0")
    saving_single_flight_usd: Mapped[Decimal] = mapped_column(Money, nullable=False,
                                                              server_default="0")
    saving_prefix_cache_usd: Mapped[Decimal] = mapped_column(Money, nullable=False,
                                                             server_default="0")
    saving_batching_usd: Mapped[Decimal] = mapped_column(Money, nullable=False,
                                                         server_default="0")
    # What a cheaper tier saved against the baseline; negative on a cascade attempt that
    # escalated (the naive way never ran it).
    saving_routing_usd: Mapped[Decimal] = mapped_column(Money, nullable=False,
                                                        server_default="0")
    saving_output_limit_usd: Mapped[Decimal] = mapped_column(Money, nullable=False,
                                                             server_default="0")
    saving_compression_usd: Mapped[Decimal] = mapped_column(Money, nullable=False,
                                                            server_default="0")
    # Minus this job's share of engine calls that raised (ledger.attribution): <= 0.
    saving_failover_usd: Mapped[Decimal] = mapped_column(Money, nullable=False,
                                                         server_default="0")
    unexplained_usd: Mapped[Decimal] = mapped_column(Money, nullable=False, server_default="0")
    # "semantic_cache": answered with the answer cached for a close question; the entry
    # (a `semantic_cache` row) and the cosine similarity it was served at.
    cache_entry_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    cache_similarity: Mapped[float | None] = mapped_column(Float)


RollupMoney = Numeric(24, 10)


def _rollup_count() -> Mapped[int]:
    return mapped_column(BigInteger, nullable=False, server_default="0")


def _rollup_money() -> Mapped[Decimal]:
    return mapped_column(RollupMoney, nullable=False, server_default="0")


class LedgerDaily(Base):
    """The ledger summed per UTC day, tenant, model, feature tag ('' for none), how the jobs
    were served and their outcome. Written only by the `ledger_daily_add` trigger, in the
    statement that inserts the ledger rows; the ledger is append-only, so every column is
    the exact sum of the ledger rows of its group."""

    __tablename__ = "ledger_daily"
    __table_args__ = (Index("ix_ledger_daily_tenant_day", "tenant_id", "day"),)

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    feature: Mapped[str] = mapped_column(String(200), primary_key=True)
    served_by: Mapped[str] = mapped_column(String(20), primary_key=True)
    outcome: Mapped[str] = mapped_column(String(20), primary_key=True)
    jobs: Mapped[int] = _rollup_count()  # ledger rows, cascade attempts included
    requests: Mapped[int] = _rollup_count()  # the jobs clients sent (no cascade attempts)
    length_jobs: Mapped[int] = _rollup_count()  # finish_reason "length"
    capped_jobs: Mapped[int] = _rollup_count()  # run with max_tokens lowered by a cap
    input_tokens: Mapped[int] = _rollup_count()
    cached_tokens: Mapped[int] = _rollup_count()
    output_tokens: Mapped[int] = _rollup_count()
    engine_seconds: Mapped[float] = mapped_column(Float, nullable=False, server_default="0")
    cost_usd: Mapped[Decimal] = _rollup_money()
    list_cost_usd: Mapped[Decimal] = _rollup_money()
    naive_cost_usd: Mapped[Decimal] = _rollup_money()
    saving_exact_cache_usd: Mapped[Decimal] = _rollup_money()
    saving_semantic_cache_usd: Mapped[Decimal] = _rollup_money()
    saving_single_flight_usd: Mapped[Decimal] = _rollup_money()
    saving_prefix_cache_usd: Mapped[Decimal] = _rollup_money()
    saving_batching_usd: Mapped[Decimal] = _rollup_money()
    saving_routing_usd: Mapped[Decimal] = _rollup_money()
    saving_output_limit_usd: Mapped[Decimal] = _rollup_money()
    saving_compression_usd: Mapped[Decimal] = _rollup_money()
    saving_failover_usd: Mapped[Decimal] = _rollup_money()
    unexplained_usd: Mapped[Decimal] = _rollup_money()


class MaxTokensCap(Base):
    """A tenant's opt-in cap on max_tokens for one feature tag: intake lowers a job's
    max_tokens to it and keeps what the client asked for (`requested_max_tokens`)."""

    __tablename__ = "max_tokens_caps"

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    feature: Mapped[str] = mapped_column(String(200), primary_key=True)
    max_tokens: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class StoredPriceCard(Base):
    """One version of a model's prices; a new version is stored when the configured prices
    change, and every ledger row names the version it was priced with."""

    __tablename__ = "price_cards"
    __table_args__ = (UniqueConstraint("model", "version", name="uq_price_cards_model_version"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(String(200), nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    engine_hour_usd: Mapped[Decimal] = mapped_column(Money, nullable=False)
    list_input_usd_per_mtok: Mapped[Decimal | None] = mapped_column(Money)
    list_cached_input_usd_per_mtok: Mapped[Decimal | None] = mapped_column(Money)
    list_output_usd_per_mtok: Mapped[Decimal | None] = mapped_column(Money)
    created_at: Mapped[datetime] = _now()


class StoredCalibration(Base):
    """One version of a model's engine speed as `penny calibrate` measured it, with the
    machine and engine settings it was measured on and the probe's raw samples."""

    __tablename__ = "calibrations"
    __table_args__ = (UniqueConstraint("model", "version",
                                       name="uq_calibrations_model_version"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(String(200), nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    request_overhead_s: Mapped[float] = mapped_column(Float, nullable=False)
    prefill_s_per_token: Mapped[float] = mapped_column(Float, nullable=False)
    decode_s_per_token_bs1: Mapped[float] = mapped_column(Float, nullable=False)
    decode_s_per_token_full: Mapped[float] = mapped_column(Float, nullable=False)
    full_batch_jobs: Mapped[int] = mapped_column(Integer, nullable=False)
    # Decode seconds per token of context per output token; NULL: measured before the
    # probe separated it (the cost model takes it as 0).
    decode_s_per_context_token: Mapped[float | None] = mapped_column(Float)
    machine: Mapped[dict[str, Any]] = mapped_column(JsonDoc, nullable=False)
    engine_settings: Mapped[dict[str, Any]] = mapped_column(JsonDoc, nullable=False)
    samples: Mapped[list[dict[str, Any]]] = mapped_column(JsonDoc, nullable=False)
    created_at: Mapped[datetime] = _now()


class StoredRouterClassifier(Base):
    """One version of the router's classifier (`routing.classifier`), as `penny
    train-router` fitted it, with what it was trained on and how it scored."""

    __tablename__ = "router_classifiers"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    version: Mapped[int] = mapped_column(Integer, nullable=False, unique=True)
    embedding_model: Mapped[str] = mapped_column(String(200), nullable=False)
    dimensions: Mapped[int] = mapped_column(Integer, nullable=False)
    weights: Mapped[list[float]] = mapped_column(JsonDoc, nullable=False)
    bias: Mapped[float] = mapped_column(Float, nullable=False)
    threshold: Mapped[float] = mapped_column(Float, nullable=False)
    trained_on: Mapped[dict[str, Any]] = mapped_column(JsonDoc, nullable=False)
    created_at: Mapped[datetime] = _now()


class ResultCacheEntry(Base):
    """An answer kept for later identical jobs of the same tenant (see cache.keys). It
    holds the result row as the source job got it and what producing it cost."""

    __tablename__ = "result_cache"
    __table_args__ = (
        # The intake lookup: one probe per job on (tenant, key).
        UniqueConstraint("tenant_id", "cache_key", name="uq_result_cache_tenant_key"),
        # Eviction walks a tenant's entries least recently used first.
        Index("ix_result_cache_tenant_used", "tenant_id", "last_used_at"),
        Index("ix_result_cache_tenant_created", "tenant_id", "created_at", "id"),
        Index("ix_result_cache_expires", "expires_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"), nullable=False)
    cache_key: Mapped[str] = mapped_column(String(64), nullable=False)
    model: Mapped[str] = mapped_column(String(200), nullable=False)
    model_identity: Mapped[str] = mapped_column(String(64), nullable=False)
    # The stored request the key was made from, for inspection.
    request: Mapped[dict[str, Any]] = mapped_column(JsonDoc, nullable=False)
    # The job whose run produced the answer (not a foreign key, as on the ledger: an
    # archived job must not take its still-valid answer with it).
    source_job_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    text: Mapped[str] = mapped_column(Text, nullable=False)
    finish_reason: Mapped[str] = mapped_column(String(40), nullable=False)
    prompt_tokens: Mapped[int] = mapped_column(Integer, nullable=False)
    cached_tokens: Mapped[int] = mapped_column(Integer, nullable=False)
    output_tokens: Mapped[int] = mapped_column(Integer, nullable=False)
    mean_logprob: Mapped[float | None] = mapped_column(Float)
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary)
    embedding_dimensions: Mapped[int | None] = mapped_column(Integer)
    original_prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    token_logprobs: Mapped[list[dict[str, Any]] | None] = mapped_column(JsonDoc)
    choices: Mapped[list[dict[str, Any]] | None] = mapped_column(JsonDoc)
    # The source job's ledger figures: a hit saves `cost_usd`, and `list_cost_usd` is
    # still what a hosted API would have charged for the request.
    cost_usd: Mapped[Decimal] = mapped_column(Money, nullable=False)
    list_cost_usd: Mapped[Decimal] = mapped_column(Money, nullable=False)
    hits: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    last_hit_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The later of created_at and last_hit_at: eviction drops the smallest first.
    last_used_at: Mapped[datetime] = _now()
    # Set when an operator replaced the answer: the corrected answer is served from then on.
    corrected_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _now()
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class Worker(Base):
    """A live engine worker; it heartbeats so the coalescer knows whom to route to."""

    __tablename__ = "workers"
    __table_args__ = (Index("ix_workers_model_heartbeat", "model", "heartbeat_at"),)

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    model: Mapped[str] = mapped_column(String(200), nullable=False)
    started_at: Mapped[datetime] = _now()
    heartbeat_at: Mapped[datetime] = _now()


class WebhookDelivery(Base):
    """The outbox: one row per event to deliver, written in the transaction that ends its
    submission, so an event is never lost and never written twice. The delivery loop
    claims due rows with SKIP LOCKED."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_due", "next_attempt_at",
              postgresql_where=text("status = 'pending'")),
        Index("ix_webhook_deliveries_tenant_created", "tenant_id", "created_at"),
        Index("ix_webhook_deliveries_submission", "submission_id"),
        Index("ix_webhook_deliveries_endpoint", "tenant_id", "url"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    # The `webhook-id` header and the event's `id`: the same on every attempt.
    event_id: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"), nullable=False)
    submission_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("submissions.id"),
                                                     nullable=False)
    event_type: Mapped[str] = mapped_column(String(40), nullable=False)
    # The exact body signed and sent; text, not JSONB, so every retry sends the same bytes.
    payload: Mapped[str] = mapped_column(Text, nullable=False)
    url: Mapped[str] = mapped_column(String(2000), nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False, server_default="pending")
    # Attempts in this round (a retry through the API starts a new round).
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Set while an attempt is out; a late result from an older claim is discarded.
    claim_token: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    last_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class WebhookAttempt(Base):
    """The delivery log: every attempt, what was sent where, and what came back."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    delivery_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("webhook_deliveries.id"),
                                                   nullable=False, index=True)
    attempt: Mapped[int] = mapped_column(Integer, nullable=False)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    duration_ms: Mapped[float] = mapped_column(Float, nullable=False)
    # The `webhook-timestamp` this attempt was signed with; null if it was refused first.
    webhook_timestamp: Mapped[int | None] = mapped_column(BigInteger)
    # The address connected to (the one that was checked), or null if none was.
    address: Mapped[str | None] = mapped_column(String(64))
    status_code: Mapped[int | None] = mapped_column(Integer)
    # What the attempt led to: delivered, pending (retry), failed or disabled.
    outcome: Mapped[str] = mapped_column(String(20), nullable=False)
    error: Mapped[str | None] = mapped_column(Text)
    retry_after_seconds: Mapped[float | None] = mapped_column(Float)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    response_excerpt: Mapped[str | None] = mapped_column(Text)


class WebhookEndpoint(Base):
    """An endpoint (a tenant's URL) that answered 410 Gone: nothing more is sent to it
    until a delivery to it is retried through the API."""

    __tablename__ = "webhook_endpoints"

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    url: Mapped[str] = mapped_column(String(2000), primary_key=True)
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    disabled_reason: Mapped[str | None] = mapped_column(Text)


class SemanticCacheCounter(Base):
    """Per-tenant tallies of semantic-cache lookups: "hits", "misses", "audits",
    "audit_mismatches" and "rejected:<reason>" (see cache.semantic_verify.Rejection). The
    vector table itself (`semantic_cache`) exists only where pgvector does and is queried
    in SQL by models.semantic_cache."""

    __tablename__ = "semantic_cache_counters"

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
