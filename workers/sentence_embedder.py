"""The sentence-transformers adapter of the embedder port.

Inputs are counted with the model's own tokenizer first: an input longer than the model
reads fails alone (`context_length_exceeded`, as the hosted API answers) instead of being
cut short silently, and the count is what the ledger bills. The rest run through one
`SentenceTransformer.encode` call.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from typing import Any

from penny.errors import PennyError
from penny.settings import Settings
from workers.embedder import BatchEmbedding, Embedding, EmbeddingRequest
from workers.registry import embedding_model_source

log = logging.getLogger(__name__)
ENCODE_BATCH_SIZE = 64


class EmbedderMismatch(PennyError):
    """The weights make vectors of another size than the settings promise intake."""


class SentenceTransformerEmbedder:
    """Loads one `SentenceTransformer` at construction; embed() may then be called any
    number of times. Construct it once per process."""

    def __init__(self, settings: Settings, model: str) -> None:
        source = embedding_model_source(settings, model)
        # Everything is on disk already; never let a load reach for the network.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as transformers_logging

        # A weight-loading progress bar per start says nothing a log line does not.
        transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        started = time.perf_counter()
        self._model_name = model
        self.model = SentenceTransformer(source, device=settings.embedding_device)
        # Inputs past this are cut short by the model, so longer ones are refused instead.
        self.max_input_tokens = int(self.model.max_seq_length
                                    or self.model.tokenizer.model_max_length)
        # One real encode: it sizes the vectors and warms the model up before the first batch.
        self._dimensions = int(self._encode(["dimension probe"]).shape[1])
        expected = settings.embedding_models[model].dimensions
        if self._dimensions != expected:
            raise EmbedderMismatch(
                f"model {model} makes {self._dimensions}-dimensional vectors but the settings "
                f"say {expected}; fix PENNY_EMBEDDING_MODELS")
        self.startup_seconds = time.perf_counter() - started
        log.info("embedder for %s ready in %.1fs", model, self.startup_seconds)

    @property
    def model_name(self) -> str:
        return self._model_name

    @property
    def dimensions(self) -> int:
        return self._dimensions

    def _encode(self, texts: list[str]) -> Any:
        return self.model.encode(texts, batch_size=ENCODE_BATCH_SIZE, show_progress_bar=False,
                                 convert_to_numpy=True)

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """Tokens the model reads for each text, its special tokens included."""
        # verbose=False: an over-long input is refused (see _too_long), not warned about.
        encoded = self.model.tokenizer(list(texts), add_special_tokens=True, truncation=False,
                                       verbose=False)
        return [len(ids) for ids in encoded["input_ids"]]

    def _too_long(self, request: EmbeddingRequest, counts: list[int]) -> Embedding | None:
        longest = max(counts)
        if longest <= self.max_input_tokens:
            return None
        where = "the input" if len(counts) == 1 else f"input {counts.index(longest)}"
        return Embedding(
            key=request.key, input_tokens=sum(counts), error_code="context_length_exceeded",
            error_message=(f"{where} has {longest} tokens; model {self._model_name} reads at "
                           f"most {self.max_input_tokens}"))

    def _vectors(self, requests: Sequence[EmbeddingRequest]) -> dict[str, Any]:
        """Each request's rows of the encoded matrix; one encode call for them all, or
        (if that fails) one per request, so a request that breaks the model fails alone."""
        texts = [text for request in requests for text in request.inputs]
        try:
            matrix = self._encode(texts) if texts else []
        except Exception:
            log.exception("encoding a batch of %d inputs failed; retrying one job at a time",
                          len(texts))
            by_key: dict[str, Any] = {}
            for request in requests:
                try:
                    by_key[request.key] = self._encode(list(request.inputs))
                except Exception as error:
                    by_key[request.key] = error
            return by_key
        by_key, start = {}, 0
        for request in requests:
            by_key[request.key] = matrix[start:start + len(request.inputs)]
            start += len(request.inputs)
        return by_key

    def embed(self, requests: Sequence[EmbeddingRequest]) -> BatchEmbedding:
        counts = {r.key: self.token_counts(r.inputs) for r in requests}
        done: dict[str, Embedding] = {}
        runnable = []
        for request in requests:
            rejected = self._too_long(request, counts[request.key])
            if rejected is not None:
                done[request.key] = rejected
            else:
                runnable.append(request)
        started = time.perf_counter()
        vectors = self._vectors(runnable)
        engine_seconds = time.perf_counter() - started
        for request in runnable:
            rows = vectors[request.key]
            tokens = sum(counts[request.key])
            if isinstance(rows, Exception):
                done[request.key] = Embedding(key=request.key, input_tokens=tokens,
                                              error_code="embedding_failed",
                                              error_message=f"the model failed: {rows}")
            else:
                done[request.key] = Embedding(key=request.key, input_tokens=tokens,
                                              vectors=tuple(tuple(row) for row in
                                                            rows.tolist()))
        return BatchEmbedding(embeddings=tuple(done[r.key] for r in requests),
                              engine_seconds=engine_seconds)
