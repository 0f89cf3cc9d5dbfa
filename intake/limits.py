"""Checks a job request against what this deployment serves and allows."""

from __future__ import annotations

from dataclasses import dataclass, field

from cache.keys import CacheMode
from intake.cache_option import TagCache, tag_caches
from intake.compress_option import TagCompression, tag_compressions
from intake.max_tokens_caps import DEFAULT_FEATURE_TAG
from intake.routing import routed_model
from intake.schema import JobRequest
from intake.text import DEFAULT_MAX_JSON_DEPTH
from penny.errors import InvalidRequest, UnknownModel
from penny.settings import Settings
from routing.policy import TagRoute, requested_model, tag_routes
from routing.router import CASCADE_MODEL


@dataclass(frozen=True)
class IntakeLimits:
    models: frozenset[str]
    default_model: str
    max_output_tokens: int
    max_prompt_chars: int
    # A chat model's context window in tokens (prompt and answer together) unless
    # `model_context_tokens` gives that model its own.
    context_tokens: int = 2048
    max_json_depth: int = DEFAULT_MAX_JSON_DEPTH
    # Embedding model name -> the dimensions of its vectors.
    embedding_models: dict[str, int] = field(default_factory=dict)
    default_embedding_model: str = ""
    # Chat models `auto` and `cascade` choose among, cheapest first.
    tiers: tuple[str, ...] = ()
    # Per-tag routing policy for jobs that name no model, in declared order.
    tag_routes: tuple[TagRoute, ...] = ()
    # Per-tag opt-in compression for jobs that say nothing of it, in declared order.
    tag_compression: tuple[TagCompression, ...] = ()
    # Per-tag cache mode for jobs that name none, in declared order.
    tag_cache: tuple[TagCache, ...] = ()
    # Whether the deployment runs the semantic cache (`cache: "semantic"` asks for it).
    semantic_cache: bool = False
    # Chat model name -> its own context window, where it differs from `context_tokens`.
    model_context_tokens: dict[str, int] = field(default_factory=dict)
    # The tag whose value names a job's feature: a tenant's max_tokens caps are per feature.
    feature_tag: str = DEFAULT_FEATURE_TAG

    def context_of(self, model: str) -> int:
        return self.model_context_tokens.get(model, self.context_tokens)

    @classmethod
    def from_settings(cls, settings: Settings) -> IntakeLimits:
        return cls(
            models=frozenset(settings.models),
            default_model=settings.default_model,
            max_output_tokens=settings.max_output_tokens,
            max_prompt_chars=settings.max_prompt_chars,
            context_tokens=settings.engine_max_model_len,
            max_json_depth=settings.max_json_depth,
            embedding_models={name: model.dimensions
                              for name, model in settings.embedding_models.items()},
            default_embedding_model=settings.default_embedding_model,
            tiers=tuple(settings.tiers),
            tag_routes=tag_routes(settings.tag_routes),
            tag_compression=tag_compressions(settings.tag_compression),
            tag_cache=tag_caches(settings.tag_cache),
            semantic_cache=settings.semantic_cache,
            model_context_tokens={name: settings.context_tokens_for(name)
                                  for name in settings.models},
            feature_tag=settings.report_feature_tag,
        )


def resolve_model(request: JobRequest, limits: IntakeLimits) -> str:
    """Return the model the job will run on (for `auto` and `cascade`, the tier they
    choose), or raise a precise error."""
    asked, _ = requested_model(request.model, request.metadata, limits.default_model,
                               limits.tag_routes)
    model = routed_model(request, asked, limits.tiers)
    if model in limits.embedding_models:
        raise UnknownModel(f"model {model!r} is an embedding model; send it /v1/embeddings "
                           "requests in an OpenAI batch", param="model")
    if model not in limits.models:
        served = ", ".join(sorted(limits.models))
        raise UnknownModel(f"model {model!r} is not served here (served: {served})",
                           param="model")
    if request.max_tokens > limits.max_output_tokens:
        raise InvalidRequest(
            f"max_tokens {request.max_tokens} exceeds this deployment's limit of "
            f"{limits.max_output_tokens}",
            param="max_tokens",
        )
    _check_fits_context(request.max_tokens, asked, model, limits)
    if request.cache == CacheMode.SEMANTIC and not limits.semantic_cache:
        # Run as "on" it would quietly never be what was asked for.
        raise InvalidRequest("cache 'semantic' asks for the semantic cache, which this "
                             "deployment does not run (PENNY_SEMANTIC_CACHE); ask for 'on' "
                             "to use the exact result cache only", param="cache")
    if request.prompt_chars() > limits.max_prompt_chars:
        raise InvalidRequest(
            f"the prompt has {request.prompt_chars()} characters; the limit is "
            f"{limits.max_prompt_chars}",
            param="messages" if request.messages is not None else "prompt",
        )
    return model


def _check_fits_context(max_tokens: int, asked: str, model: str, limits: IntakeLimits) -> None:
    """The answer must fit the window of every model the job may run on: the one it is
    queued on, and for a cascade each tier it may climb to. The prompt takes at least one
    token of the window; the worker checks the exact sum."""
    climbs = limits.tiers if asked == CASCADE_MODEL else (model,)
    context, tightest = min((limits.context_of(name), name) for name in climbs)
    if max_tokens < context:
        return
    via = " (a cascade may climb to it)" if tightest != model else ""
    raise InvalidRequest(
        f"max_tokens {max_tokens} does not fit model {tightest}'s context window of "
        f"{context} tokens{via}, which also holds the prompt; ask for at most "
        f"{context - 1} (less the prompt's tokens)",
        param="max_tokens",
    )
