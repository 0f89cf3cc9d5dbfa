"""Running a batch of embeddings jobs on an `Embedder`: vectors on the result rows, and
ledger rows whose input tokens are the embedder's own count (an embedding has no output
tokens and no prefix cache)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from compat.vectors import pack_vectors
from ledger.pricing import TokenUsage
from models.queue import ClaimedBatch, JobOutcome
from penny.settings import Settings
from workers.embedder import Embedder, Embedding, EmbeddingRequest
from workers.execution import ExecutedBatch, JobProduct, priced_outcomes

log = logging.getLogger(__name__)


def _embedding_product(embedding: Embedding) -> JobProduct:
    usage = TokenUsage(embedding.input_tokens, 0, 0)
    if not embedding.ok:
        return JobProduct(usage, None, {"code": embedding.error_code,
                                        "message": embedding.error_message})
    return JobProduct(usage, {
        "text": "",
        "finish_reason": "",
        "prompt_tokens": embedding.input_tokens,
        "cached_tokens": 0,
        "output_tokens": 0,
        "mean_logprob": None,
        "embedding": pack_vectors(embedding.vectors),
        "embedding_dimensions": len(embedding.vectors[0]) if embedding.vectors else 0,
    })


def embedding_outcomes_for(
    batch: ClaimedBatch,
    embeddings: Sequence[Embedding],
    engine_seconds: float,
    settings: Settings,
) -> list[JobOutcome]:
    return priced_outcomes(batch, [_embedding_product(e) for e in embeddings],
                           engine_seconds, settings)


class EmbeddingExecutor:
    """Embeddings jobs on an embedding model."""

    def __init__(self, embedder: Embedder, settings: Settings) -> None:
        self.embedder, self.settings = embedder, settings

    @property
    def model_name(self) -> str:
        return self.embedder.model_name

    def execute(self, batch: ClaimedBatch) -> ExecutedBatch:
        requests = [EmbeddingRequest.from_stored(str(job.id), job.request)
                    for job in batch.jobs]
        embedded = self.embedder.embed(requests)
        return ExecutedBatch(
            embedding_outcomes_for(batch, embedded.embeddings, embedded.engine_seconds,
                                   self.settings),
            embedded.engine_seconds)

    def still_works(self) -> bool:
        try:
            self.embedder.embed([EmbeddingRequest(key="canary", inputs=("hi",))])
        except Exception:
            log.exception("the embedder fails a one-input canary too")
            return False
        return True
