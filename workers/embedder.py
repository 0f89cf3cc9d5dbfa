"""The embedder port: a whole batch of embeddings requests in, one result per request out.

Workers talk to this Protocol only; `workers.sentence_embedder` is its one real adapter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class EmbeddingRequest:
    """One job as the embedder sees it: its inputs, each to become one vector. `key` is
    echoed back on its result."""

    key: str
    inputs: tuple[str, ...]

    @classmethod
    def from_stored(cls, key: str, request: dict[str, Any]) -> EmbeddingRequest:
        """Build from a job row's `request` document (see `EmbeddingJobRequest`)."""
        return cls(key=key, inputs=tuple(request["input"]))


@dataclass(frozen=True)
class Embedding:
    """The outcome of one request: a vector per input and the tokens the model read for
    them all, or an error."""

    key: str
    vectors: tuple[tuple[float, ...], ...] = ()
    input_tokens: int = 0
    error_code: str | None = None
    error_message: str | None = None

    @property
    def ok(self) -> bool:
        return self.error_code is None


@dataclass(frozen=True)
class BatchEmbedding:
    embeddings: tuple[Embedding, ...]
    engine_seconds: float


class Embedder(Protocol):
    @property
    def model_name(self) -> str: ...

    @property
    def dimensions(self) -> int: ...

    def embed(self, requests: Sequence[EmbeddingRequest]) -> BatchEmbedding:
        """Embed every request in one pass; never raise for one bad request."""
        ...
