"""Checks a job request against what this deployment serves and allows."""

from __future__ import annotations

from dataclasses import dataclass, field

from intake.schema import JobRequest
from penny.errors import InvalidRequest, UnknownModel
from penny.settings import Settings


@dataclass(frozen=True)
class IntakeLimits:
    models: frozenset[str]
    default_model: str
    max_output_tokens: int
    max_prompt_chars: int
    # Embedding model name -> the dimensions of its vectors.
    embedding_models: dict[str, int] = field(default_factory=dict)
    default_embedding_model: str = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> IntakeLimits:
        return cls(
            models=frozenset(settings.models),
            default_model=settings.default_model,
            max_output_tokens=settings.max_output_tokens,
            max_prompt_chars=settings.max_prompt_chars,
            embedding_models={name: model.dimensions
                              for name, model in settings.embedding_models.items()},
            default_embedding_model=settings.default_embedding_model,
        )


def resolve_model(request: JobRequest, limits: IntakeLimits) -> str:
    """Return the model the job will run on, or raise a precise error."""
    model = request.model or limits.default_model
    if model in limits.embedding_models:
        raise UnknownModel(f"model '{model}' is an embedding model; send it /v1/embeddings "
                           "requests in an OpenAI batch", param="model")
    if model not in limits.models:
        served = ", ".join(sorted(limits.models))
        raise UnknownModel(f"model '{model}' is not served here (served: {served})", param="model")
    if request.max_tokens > limits.max_output_tokens:
        raise InvalidRequest(
            f"max_tokens {request.max_tokens} exceeds this deployment's limit of "
            f"{limits.max_output_tokens}",
            param="max_tokens",
        )
    if request.prompt_chars() > limits.max_prompt_chars:
        raise InvalidRequest(
            f"the prompt has {request.prompt_chars()} characters; the limit is "
            f"{limits.max_prompt_chars}",
            param="messages" if request.messages is not None else "prompt",
        )
    return model
