"""Wire shapes of the native jobs API (the job request itself is `intake.schema.JobRequest`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue, WithJsonSchema

from cache.keys import CacheMode
from ledger.attribution import MECHANISMS, saving_column
from models.submissions import JobView
from models.tables import Result, Submission

# A bulk item is a JobRequest, validated by intake one item at a time (schema and model
# limits in one pass, so a 422 names every bad item); here it is only documented as one.
# POST /v1/jobs puts JobRequest in the schema's components.
BulkItem = Annotated[Any, WithJsonSchema({"$ref": "#/components/schemas/JobRequest"})]


class BulkJobsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    jobs: list[BulkItem] = Field(min_length=1)
    # The cache mode of every job that names none of its own (e.g. "semantic" for a whole
    # submission of FAQ questions).
    cache: CacheMode | None = None
    # Where to announce the submission's end (a signed webhook); else the tenant's default.
    callback_url: str | None = Field(default=None, min_length=1, max_length=2000)


class JobAccepted(BaseModel):
    id: str
    object: str = "job"
    status: str
    submission_id: str
    # Accepted, but worth knowing (a soft budget passed): [{code, message}].
    warnings: list[dict[str, Any]] = Field(default_factory=list)


class BulkAccepted(BaseModel):
    object: str = "submission"
    submission_id: str
    job_ids: list[str]
    count: int
    # The jobs the exact result cache answered in this request: already succeeded.
    from_cache: list[str] = Field(default_factory=list)
    warnings: list[dict[str, Any]] = Field(default_factory=list)


class Usage(BaseModel):
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    # With `compress`: the prompt's tokens before compression (`prompt_tokens` is what
    # the engine read).
    original_prompt_tokens: int | None = None


class Cost(BaseModel):
    usd: str
    # The naive counterfactual (sent alone, no caches, baseline model) and the saving by
    # mechanism; the parts plus `unexplained_usd` add up to naive_usd - usd.
    naive_usd: str
    savings_by_mechanism_usd: dict[str, str]
    unexplained_usd: str
    list_usd: str
    engine_seconds: float
    # "engine"; "single_flight": an identical job's run answered it; "exact_cache": the
    # result cache answered it at intake; "semantic_cache": the answer cached for a close
    # question (`cache_entry_id`) served it, at `cache_similarity`. `source_job_id` is the
    # job whose run it was.
    served_by: str
    source_job_id: str | None
    single_flight_saved_usd: str
    cache_saved_usd: str  # what producing a cached answer cost, not spent again
    route: str | None = None  # how auto or cascade chose the tier billed here
    cache_entry_id: str | None = None
    cache_similarity: float | None = None


class JobChoice(BaseModel):
    index: int
    text: str
    finish_reason: str
    logprobs: list[dict[str, Any]] | None = None


class JobResultBody(BaseModel):
    text: str
    finish_reason: str
    mean_logprob: float | None
    model: str | None = None  # the tier that produced this answer
    # With top_logprobs: each answer token's {token, logprob, bytes, top_logprobs}.
    logprobs: list[dict[str, Any]] | None = None
    # With n > 1: every sample, the first (`text` above) included, by index.
    choices: list[JobChoice] | None = None

    @classmethod
    def from_result(cls, result: Result, model: str) -> JobResultBody:
        choices = None
        if result.choices:
            samples = [{"text": result.text, "finish_reason": result.finish_reason,
                        "token_logprobs": result.token_logprobs}, *result.choices]
            choices = [JobChoice(index=i, text=s["text"], finish_reason=s["finish_reason"],
                                 logprobs=s.get("token_logprobs"))
                       for i, s in enumerate(samples)]
        return cls(text=result.text, finish_reason=result.finish_reason,
                   mean_logprob=result.mean_logprob, model=model,
                   logprobs=result.token_logprobs, choices=choices)


def _max_tokens(request: dict[str, Any]) -> dict[str, int] | None:
    sampling = request.get("sampling")
    if not isinstance(sampling, dict) or "max_tokens" not in sampling:
        return None
    applied = int(sampling["max_tokens"])
    return {"requested": int(sampling.get("requested_max_tokens", applied)),
            "applied": applied}


class JobOut(BaseModel):
    id: str
    object: str = "job"
    submission_id: str
    status: str
    model: str
    custom_id: str | None
    metadata: dict[str, JsonValue]
    attempts: int
    created_at: datetime
    finished_at: datetime | None
    result: JobResultBody | None
    usage: Usage | None
    cost: Cost | None
    error: dict[str, Any] | None
    # For `model: "auto"` or `"cascade"`: the tier chosen, why, and a cascade's attempts.
    route: dict[str, Any] | None = None
    # What the job asked for and what it ran with (lower when a max_tokens cap of its
    # feature applied); None for a job without max_tokens (embeddings).
    max_tokens: dict[str, int] | None = None

    @classmethod
    def from_view(cls, view: JobView) -> JobOut:
        job, result, ledger = view.job, view.result, view.ledger
        return cls(
            id=str(job.id),
            submission_id=str(job.submission_id),
            status=job.status,
            model=job.model,
            custom_id=job.custom_id,
            metadata=job.tags,
            attempts=job.attempts,
            created_at=job.created_at,
            finished_at=job.finished_at,
            result=JobResultBody.from_result(result, job.model) if result else None,
            usage=Usage(prompt_tokens=result.prompt_tokens, cached_tokens=result.cached_tokens,
                        completion_tokens=result.output_tokens,
                        original_prompt_tokens=result.original_prompt_tokens)
            if result else None,
            cost=Cost(usd=str(ledger.cost_usd), naive_usd=f"{ledger.naive_cost_usd:f}",
                      savings_by_mechanism_usd={
                          m: f"{getattr(ledger, saving_column(m)):f}" for m in MECHANISMS},
                      unexplained_usd=f"{ledger.unexplained_usd:f}",
                      list_usd=str(ledger.list_cost_usd),
                      engine_seconds=ledger.engine_seconds, served_by=ledger.served_by,
                      source_job_id=str(ledger.source_job_id) if ledger.source_job_id else None,
                      single_flight_saved_usd=str(ledger.single_flight_saved_usd),
                      cache_saved_usd=str(ledger.cache_saved_usd), route=ledger.route,
                      cache_entry_id=str(ledger.cache_entry_id) if ledger.cache_entry_id
                      else None,
                      cache_similarity=ledger.cache_similarity)
            if ledger else None,
            error=job.error,
            max_tokens=_max_tokens(job.request),
            route=job.route,
        )


class SubmissionOut(BaseModel):
    id: str
    object: str = "submission"
    kind: str
    status: str
    total_jobs: int
    counts: dict[str, int]
    outputs: dict[str, str] | None
    # Per output in S3, a presigned GET link (PENNY_PRESIGNED_URL_SECONDS); else null.
    output_urls: dict[str, str] | None = None
    created_at: datetime
    completed_at: datetime | None
    warnings: list[dict[str, Any]]
    # Billed so far: tokens, engine seconds, cost, list-price cost and savings.
    penny_cost: dict[str, Any]

    @classmethod
    def from_row(cls, row: Submission, counts: dict[str, int],
                 cost: dict[str, Any]) -> SubmissionOut:
        return cls(id=str(row.id), kind=row.kind, status=row.status, total_jobs=row.total_jobs,
                   counts=counts, outputs=row.outputs, created_at=row.created_at,
                   completed_at=row.completed_at, warnings=row.warnings or [],
                   penny_cost=cost)
