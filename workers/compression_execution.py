"""Opt-in prompt compression on the worker: before a batch reaches the engine, the jobs
that asked for it (`compress`) have their long context cut down to the sentences that
matter for their question (`compression.extractive`, each job's sentences embedded in one
embedder call). The rest pass through untouched.

It runs here, beside the model, because it needs the embedder (torch), which the API
never imports. Each compressed job's result keeps the prompt's size before compression
(`original_prompt_tokens`, counted with the engine's own tokenizer), from which the ledger
attributes the saving.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from compression.extractive import CompressionSpec, compress_request
from models.queue import ClaimedBatch, ClaimedJob
from workers.embedder import Embedder, EmbeddingRequest
from workers.engine import Engine, GenerationRequest
from workers.execution import BatchExecutor, ExecutedBatch

log = logging.getLogger(__name__)
# The number of tokens the engine would read for a stored request.
CountPromptTokens = Callable[[dict[str, Any]], int]


class CompressingExecutor:
    """Wraps a generation executor. `embedder` is called for the first batch with a job
    that asked for compression, so a worker whose jobs never do never loads it."""

    def __init__(self, inner: BatchExecutor, embedder: Callable[[], Embedder],
                 count_prompt_tokens: CountPromptTokens) -> None:
        self.inner, self._embedder_source = inner, embedder
        self._embedder: Embedder | None = None
        self.count_prompt_tokens = count_prompt_tokens

    @property
    def model_name(self) -> str:
        return self.inner.model_name

    def still_works(self) -> bool:
        return self.inner.still_works()

    def _embed(self, texts: Sequence[str]) -> list[np.ndarray]:
        if self._embedder is None:
            self._embedder = self._embedder_source()
        done = self._embedder.embed([EmbeddingRequest(key=str(i), inputs=(text,))
                                     for i, text in enumerate(texts)])
        vectors = []
        for embedding in done.embeddings:
            if not embedding.ok or not embedding.vectors:
                raise ValueError(embedding.error_message or "no vector")
            vector = np.asarray(embedding.vectors[0], dtype=np.float32)
            norm = float(np.linalg.norm(vector))
            vectors.append(vector / norm if norm else vector)
        return vectors

    def _compressed(self, job: ClaimedJob) -> ClaimedJob:
        stored = job.request.get("compress")
        if stored is None:
            return job
        try:
            done = compress_request(job.request, CompressionSpec.from_stored(stored),
                                    self._embed)
        except ValueError:
            # A sentence the embedder refused (too long for it): the job runs as written,
            # which is never wrong, only not cheaper.
            log.warning("job %s runs uncompressed: its context could not be embedded",
                        job.id, exc_info=True)
            return job
        return dataclasses.replace(job, request=done.request) if done.changed else job

    def execute(self, batch: ClaimedBatch) -> ExecutedBatch:
        if not any("compress" in job.request for job in batch.jobs):
            return self.inner.execute(batch)
        sent = {job.id: job for job in batch.jobs}
        # All jobs' sentences in one embedder call would be faster still; per job keeps
        # one bad context from costing the others their compression.
        ran_jobs = [self._compressed(job) for job in batch.jobs]
        ran = self.inner.execute(dataclasses.replace(batch, jobs=ran_jobs))
        outcomes = []
        for done in ran.outcomes:
            original = sent[done.job.id]
            result = done.result
            if result is not None and "compress" in original.request:
                result = {**result, "original_prompt_tokens":
                          self.count_prompt_tokens(original.request)}
            # The job as it was sent goes on (cache keys, retries, cascade read it).
            outcomes.append(dataclasses.replace(done, job=original, result=result))
        return dataclasses.replace(ran, outcomes=outcomes)


def compressing(inner: BatchExecutor, engine: Engine, embedder: Callable[[], Embedder]
                ) -> CompressingExecutor:
    """`inner` (running on `engine`) behind opt-in compression, counting prompts with the
    engine's own tokenizer and chat template."""
    def count(request: dict[str, Any]) -> int:
        return len(engine.prompt_token_ids(
            GenerationRequest.from_stored("count", request, cache_salt="")))

    return CompressingExecutor(inner, embedder, count)
